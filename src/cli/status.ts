// SPDX-License-Identifier: Apache-2.0
// `meshwarp status` and `meshwarp pods`: what the agent has attached and meshed.
import { parseArgs } from 'node:util';
import { agentRequest } from '../agent/client.ts';

function args(argv: string[]) {
  return parseArgs({ args: argv, options: { json: { type: 'boolean' }, socket: { type: 'string' } }, strict: true }).values;
}

export async function run(argv: string[]): Promise<number> {
  const o = args(argv);
  const s = await agentRequest<Record<string, any>>('GET', '/v1/status', undefined, o.socket);
  if (o.json) { process.stdout.write(`${JSON.stringify(s, null, 2)}\n`); return 0; }
  const lines = [
    `mode       ${s.mode}   profile ${s.profile}   dataplanes ${(s.dataplanes ?? ['sidecar']).join(',')}`,
    `pins       ${s.pinRoot}`,
    `cgroup     ${s.cgroup}`,
    `since      ${s.startedAt}`,
    `pods       ${s.pods} meshed`,
    '',
    'maps (entries)',
    ...Object.entries(s.maps as Record<string, number>).map(([k, v]) => `  ${k.padEnd(18)} ${v}`),
    '',
    'datapath counters',
    ...Object.entries(s.datapath as Record<string, number>).filter(([, v]) => v > 0).map(([k, v]) => `  ${k.padEnd(18)} ${v}`),
  ];
  if (s.ambient) {
    lines.push('', `ambient    ${JSON.stringify({ ztunnelReady: s.ambient.ztunnelReady, redirectMode: s.ambient.redirectMode })}   fail policy ${s.ambient.failPolicy}`);
    for (const p of s.ambient.nodeProxies) lines.push(`  node proxy ${p.id}  slot ${p.slot}  ${p.ready ? 'ready' : 'not ready'}${p.active ? '  active' : ''}`);
  }
  if (s.kubernetes) {
    lines.push('', `kubernetes ${s.kubernetes.synced ? 'synced' : 'NOT synced'}`);
    for (const w of s.kubernetes.watches) {
      const quiet = w.secondsSinceLastEvent === undefined ? 'no event yet' : `last event ${Math.round(w.secondsSinceLastEvent)} s ago`;
      lines.push(`  ${w.resource.padEnd(11)} ${w.objects} cached, ${w.restarts} restarts, ${w.relists} relists, ${quiet}`);
    }
  }
  for (const [dp, x] of Object.entries((s.sockmap ?? {}) as Record<string, { enabled: boolean; reason: string }>)) {
    lines.push('', `sockmap    ${dp}: ${x.enabled ? 'on' : 'off'} — ${x.reason}`);
  }
  for (const l of s.limitations ?? []) lines.push(`limitation: ${l.feature}: ${l.reason}`);
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}

export async function runPods(argv: string[]): Promise<number> {
  const o = args(argv);
  const { pods } = await agentRequest<{ pods: Record<string, any>[] }>('GET', '/v1/pods', undefined, o.socket);
  if (o.json) { process.stdout.write(`${JSON.stringify(pods, null, 2)}\n`); return 0; }
  if (pods.length === 0) { process.stdout.write('no meshed pods\n'); return 0; }
  const rows = pods.map((p) => [`${p.podNamespace}/${p.podName}`, p.dataplane ?? 'sidecar', p.profile, p.ip4 ?? '-', p.ip6 ?? '-', p.hostVeth?.name ?? '-']);
  const head = ['POD', 'DATAPLANE', 'PROFILE', 'IPV4', 'IPV6', 'VETH'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  for (const r of [head, ...rows]) process.stdout.write(`${r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd()}\n`);
  return 0;
}
