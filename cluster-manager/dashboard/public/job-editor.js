import { parse, stringify } from '/vendor/yaml/index.js';
import { $, ApiError, api, el, errorView } from './dom.js';

/**
 * The deploy card: a job spec in YAML or JSON (JSON is YAML too), applied as edgectl applies it: created when no
 * job has its name, else updated (PUT: unchanged, scaled, or a new version rolled out). Plan says what applying
 * would do and changes nothing.
 */
export function readSpec() {
  const text = $('deploy-spec').value;
  try {
    const spec = parse(text);
    if (!spec || typeof spec !== 'object' || Array.isArray(spec))
      throw new Error('expected a mapping of fields');
    return spec;
  } catch (error) {
    throw new Error(`Not valid YAML or JSON: ${error.message}`);
  }
}

/** Puts a job's spec in the editor, as YAML, for an update. */
export function editJob(job) {
  const {
    id: _id,
    state: _state,
    createdAt: _createdAt,
    updatedAt: _updatedAt,
    serviceIp: _serviceIp,
    instances: _instances,
    instanceCounts: _counts,
    version: _version,
    rollout: _rollout,
    ...spec
  } = job;
  $('deploy-spec').value = stringify(spec);
  $('deploy-result').replaceChildren(
    el('p', { class: 'muted', text: `Editing ${job.name} (version ${job.version}): change it, then Apply.` }),
  );
  $('deploy-spec').focus();
}

async function existing(name) {
  try {
    return await api('GET', `/api/jobs/${encodeURIComponent(name)}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return undefined;
    throw error;
  }
}

function describeChange(job) {
  const fields = job.change.changed.join(', ');
  switch (job.change.action) {
    case 'none':
      return `Job ${job.name} unchanged (version ${job.version}).`;
    case 'scale':
      return `Job ${job.name} scaled to ${job.replicas}.`;
    case 'in-place':
      return `Job ${job.name} updated to version ${job.version} (${fields}): no instance restarts.`;
    default:
      return `Job ${job.name} updated to version ${job.version} (${fields}): rolling out.`;
  }
}

/** Create or update; `onChanged(jobId)` lets the page fetch the job again. */
export async function applySpec(onChanged) {
  const result = $('deploy-result');
  try {
    const spec = readSpec();
    const current = typeof spec.name === 'string' ? await existing(spec.name) : undefined;
    if (!current) {
      const job = await api('POST', '/api/jobs', spec);
      result.replaceChildren(el('p', { class: 'ok', text: `Created job ${job.name} (${job.id}).` }));
      onChanged(job.id, true);
      return;
    }
    const job = await api('PUT', `/api/jobs/${encodeURIComponent(current.id)}`, spec);
    result.replaceChildren(el('p', { class: 'ok', text: describeChange(job) }));
    onChanged(job.id, false);
  } catch (error) {
    result.replaceChildren(...errorView(error));
  }
}

export async function planSpec() {
  const result = $('deploy-result');
  try {
    const spec = readSpec();
    const current = typeof spec.name === 'string' ? await existing(spec.name) : undefined;
    const plan = current
      ? await api('PUT', `/api/jobs/${encodeURIComponent(current.id)}?dryRun=true`, spec)
      : await api('POST', '/api/jobs?dryRun=true', spec);
    const lines = plan.instances.map((instance) =>
      el(
        'li',
        {},
        `${plan.name}#${plan.update ? 'new' : instance.number} `,
        instance.node
          ? `→ ${instance.node}`
          : el('span', { class: 'error', text: `cannot be placed: ${instance.reason}` }),
      ),
    );
    const update = plan.update;
    const summary = !update
      ? `Would create ${plan.name}:`
      : update.action === 'none'
        ? `${plan.name}: no change.`
        : update.action === 'scale'
          ? `${plan.name}: scale.`
          : `${plan.name}: version ${update.version} (${update.changed.join(', ')}), ${update.action === 'rollout' ? `${update.replaced} instance(s) replaced` : 'no instance restarts'}.`;
    result.replaceChildren(el('p', { class: 'plan', text: summary }), el('ul', { class: 'plan' }, lines));
  } catch (error) {
    result.replaceChildren(...errorView(error));
  }
}
