// SPDX-License-Identifier: Apache-2.0
// Prometheus text exposition of the agent's state and the datapath counters.
import type { Agent } from './agent.ts';

export function renderMetrics(agent: Agent): string {
  const out: string[] = [];
  const metric = (name: string, type: 'gauge' | 'counter', help: string, samples: [Record<string, string>, number | bigint][]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of samples) {
      const l = Object.entries(labels).map(([k, x]) => `${k}="${x.replace(/["\\\n]/g, '_')}"`).join(',');
      out.push(`${name}${l ? `{${l}}` : ''} ${v}`);
    }
  };
  const s = agent.status();
  metric('meshwarp_info', 'gauge', 'Agent engine, dataplanes and profile (mode: the engine\'s old name).',
    [[{ engine: s.engine, mode: s.engine, dataplanes: s.dataplanes.join(','), profile: agent.cfg.profile }, 1]]);
  metric('meshwarp_pods', 'gauge', 'Pods meshed by this agent.', [[{}, s.pods]]);
  metric('meshwarp_map_entries', 'gauge', 'Entries per datapath map.', Object.entries(s.maps).map(([m, n]) => [{ map: m }, n]));
  metric('meshwarp_datapath_events_total', 'counter', 'Datapath counters (captured, bypassed, failed updates), summed over CPUs.',
    Object.entries(s.datapath).map(([e, n]) => [{ event: e }, n]));
  const sm = Object.entries(s.sockmap ?? {});
  if (sm.length) {
    metric('meshwarp_sockmap_enabled', 'gauge', 'Sockmap acceleration (S4) on (1) or off (0), with the reason (behaviour gate verdict).',
      sm.map(([dp, x]) => [{ dataplane: dp, mode: x.mode, reason: x.reason.slice(0, 200) }, x.enabled ? 1 : 0]));
    metric('meshwarp_sockmap_gate_failed', 'gauge', 'Behaviour gate checks that failed on this kernel (1 per check).',
      sm.flatMap(([dp, x]) => x.failed.map((f) => [{ dataplane: dp, check: f }, 1] as [Record<string, string>, number])));
  }
  const c = agent.counters;
  metric('meshwarp_cni_requests_total', 'counter', 'CNI requests handled.', [[{ command: 'add' }, c.cniAdd], [{ command: 'del' }, c.cniDel]]);
  metric('meshwarp_errors_total', 'counter', 'Requests that failed inside the agent.', [[{}, c.cniErrors]]);
  metric('meshwarp_reconciled_pods_total', 'counter', 'Pods re-meshed from the state file at start.', [[{}, c.reconciled]]);
  metric('meshwarp_swept_sandboxes_total', 'counter', 'Sandboxes whose datapath state was removed because nobody owned it any more (lost DEL, netns gone).',
    [[{}, c.swept]]);
  const w = agent.podSource?.watchStats();
  if (w) {
    metric('meshwarp_kube_watch_restarts_total', 'counter', 'Kubernetes watches restarted.', w.map((x) => [{ resource: x.resource }, x.restarts]));
    metric('meshwarp_kube_relists_total', 'counter', 'Kubernetes relists (after a 410 or a failed list).', w.map((x) => [{ resource: x.resource }, x.relists]));
    metric('meshwarp_kube_cache_objects', 'gauge', 'Objects in the watch cache.', w.map((x) => [{ resource: x.resource }, x.objects]));
    metric('meshwarp_kube_seconds_since_last_event', 'gauge', 'Seconds since the watch last saw an event or bookmark (-1: none yet).',
      w.map((x) => [{ resource: x.resource }, x.secondsSinceLastEvent ?? -1]));
  }
  // The process figures under the names Prometheus client libraries use, so node dashboards work.
  const m = process.memoryUsage();
  const cpu = process.cpuUsage();
  metric('process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.', [[{}, m.rss]]);
  metric('process_cpu_seconds_total', 'counter', 'User and system CPU time spent in seconds.', [[{}, (cpu.user + cpu.system) / 1e6]]);
  metric('nodejs_heap_size_used_bytes', 'gauge', 'V8 heap in use, bytes.', [[{}, m.heapUsed]]);
  metric('nodejs_heap_size_total_bytes', 'gauge', 'V8 heap reserved, bytes.', [[{}, m.heapTotal]]);
  metric('nodejs_external_memory_bytes', 'gauge', 'Memory of C++ objects bound to JavaScript (buffers), bytes.', [[{}, m.external]]);
  return `${out.join('\n')}\n`;
}
