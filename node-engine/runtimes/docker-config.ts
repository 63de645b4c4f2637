import type { ContainerCreateOptions } from 'dockerode';
import { DEFAULT_LOG_LIMITS, type LogLimits, logLimitsOf } from './log-limits.js';
import { type InstanceSpec, workloadLabels, workloadName } from './runtime.js';

/**
 * The Docker create options of an instance: limits, ports, devices and GPUs of the job spec, the labels the
 * node engine finds it by, its output bounded (json-file with the node's or the job's log limits), and Docker's
 * own restart policy off (the node engine restarts workloads itself).
 */
export function containerCreateOptions(
  spec: InstanceSpec,
  nodeLogLimits: LogLimits = DEFAULT_LOG_LIMITS,
): ContainerCreateOptions {
  const { job } = spec;
  const logs = logLimitsOf(job, nodeLogLimits);
  const exposedPorts: Record<string, object> = {};
  const portBindings: Record<string, Array<{ HostPort: string }>> = {};
  for (const port of job.ports) {
    const key = `${port.container}/${port.protocol}`;
    exposedPorts[key] = {};
    // No host port asked: Docker picks a free one, as `docker run -p 80` does.
    portBindings[key] = [{ HostPort: port.host === undefined ? '' : String(port.host) }];
  }
  const { cpus, memoryMB, pids, gpus } = job.resources;
  return {
    name: workloadName(spec),
    Image: job.image,
    ...(job.command && job.command.length > 0 ? { Cmd: job.command } : {}),
    Env: Object.entries(job.env).map(([name, value]) => `${name}=${value}`),
    Labels: workloadLabels(spec),
    ExposedPorts: exposedPorts,
    HostConfig: {
      ...(cpus !== undefined ? { NanoCpus: Math.round(cpus * 1e9) } : {}),
      ...(memoryMB !== undefined ? { Memory: memoryMB * 1024 * 1024 } : {}),
      ...(pids !== undefined ? { PidsLimit: pids } : {}),
      PortBindings: portBindings,
      Devices: job.devices.map((path) => ({
        PathOnHost: path,
        PathInContainer: path,
        CgroupPermissions: 'rwm',
      })),
      ...(gpus > 0 ? { DeviceRequests: [{ Driver: '', Count: gpus, Capabilities: [['gpu']] }] } : {}),
      RestartPolicy: { Name: 'no' },
      // Bounded output on the node's disk, whatever the daemon's default driver (an SD card fills up).
      LogConfig: {
        Type: 'json-file',
        Config: { 'max-size': `${logs.maxSizeMB}m`, 'max-file': String(logs.maxFiles) },
      },
    },
  };
}
