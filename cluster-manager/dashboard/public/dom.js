// What every part of the dashboard uses: building elements (never innerHTML: values from the API go in as text),
// calling the API with the token, and formatting numbers and times.

export const TOKEN_KEY = 'edge.apiToken';

export const $ = (id) => document.getElementById(id);

/** Creates an element; `props` sets classes, text, attributes and `on*` handlers; children are nodes or text. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An SVG element (charts). */
export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.details = body?.error?.details ?? [];
  }
}

export function authorization() {
  return { authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ''}` };
}

export async function api(method, path, body) {
  const headers = authorization();
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** An error as a paragraph, with each field's problem listed when the API named them. */
export function errorView(error) {
  const details = error instanceof ApiError ? error.details : [];
  return [
    el('p', {
      class: 'error',
      text: error instanceof ApiError ? error.message : `${error.message ?? error}`,
    }),
    details.length > 0
      ? el(
          'ul',
          { class: 'details' },
          details.map((detail) => el('li', {}, el('code', { text: detail.path }), `: ${detail.message}`)),
        )
      : null,
  ];
}

export function percent(value) {
  return typeof value === 'number' && Number.isFinite(value) ? Math.max(0, Math.min(100, value)) : null;
}

export function age(ts) {
  if (typeof ts !== 'number') return 'never';
  const seconds = Math.max(0, Math.round((Date.now() - ts) / 1000));
  if (seconds < 120) return `${seconds}s ago`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

export function clock(ts) {
  return new Date(ts).toLocaleTimeString([], { hour12: false });
}

export function mebibytes(bytes) {
  return typeof bytes === 'number' ? `${Math.round(bytes / 1048576)} MiB` : '–';
}

/** A usage bar with its percentage; a dash when the figure is not known. */
export function usageBar(value) {
  const pct = percent(value);
  if (pct === null) return el('span', { class: 'muted', text: '–' });
  const bar = el('span', { class: 'bar-fill' });
  bar.style.width = `${pct}%`;
  if (pct >= 90) bar.classList.add('hot');
  return el('span', { class: 'usage' }, el('span', { class: 'bar' }, bar), `${Math.round(pct)}%`);
}
