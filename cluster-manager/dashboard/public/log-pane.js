import { $, ApiError, authorization, el } from './dom.js';

/** What the pane keeps of the output: the newest characters only (a chatty container never fills the tab). */
const KEPT_CHARS = 200_000;

let following = null;

/**
 * Follows one instance's output (GET /api/jobs/:id/instances/:n/logs?follow=true), read as it streams: the body is
 * read only as fast as the page appends it, so the cluster manager and the node hold back the rest. Opening
 * another instance, or Stop, ends the stream (the node stops reading).
 */
export async function openLogs(job, instance) {
  stopLogs();
  const controller = new AbortController();
  following = controller;
  const output = $('log-output');
  output.textContent = '';
  $('log-title').textContent = `${job.name}#${instance.number}`;
  $('log-state').textContent = 'connecting…';
  $('logs').hidden = false;
  $('logs').scrollIntoView({ block: 'nearest' });
  try {
    const response = await fetch(
      `/api/jobs/${encodeURIComponent(job.id)}/instances/${instance.number}/logs?follow=true&tail=200`,
      { headers: { ...authorization(), accept: 'text/plain' }, signal: controller.signal },
    );
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => undefined));
    $('log-state').textContent = 'following';
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const text = output.textContent + value;
      output.textContent = text.length > KEPT_CHARS ? text.slice(-KEPT_CHARS) : text;
      output.scrollTop = output.scrollHeight;
    }
    if (following === controller) $('log-state').textContent = 'ended';
  } catch (error) {
    if (following !== controller) return;
    $('log-state').replaceChildren(
      el('span', {
        class: 'error',
        text: error.name === 'AbortError' ? 'stopped' : `error: ${error.message}`,
      }),
    );
  }
}

export function stopLogs() {
  const open = following;
  following = null;
  open?.abort();
  if (open) $('log-state').textContent = 'stopped';
}
