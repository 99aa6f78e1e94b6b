// SPDX-License-Identifier: Apache-2.0
// The doctor's report: the JSON document (schema 1, keys documented in
// docs/doctor.md — additive changes only) and its human rendering. Pure.
import type { KernelInfo, HostInfo, Probe } from './probes.ts';
import { judge, exitCode, severity, type FeatureVerdict } from './features.ts';

export const SCHEMA = 1;

export interface Report {
  schema: number;
  kernel: KernelInfo;
  host: HostInfo;
  checks: Probe[];
  features: FeatureVerdict[];
  /** Every feature the default sidecar eBPF mode needs is ready or degraded. */
  ready: boolean;
}

export function buildReport(p: { kernel: KernelInfo; host: HostInfo; checks: Probe[] }): Report {
  const features = judge(p.checks);
  return { schema: SCHEMA, kernel: p.kernel, host: p.host, checks: p.checks, features, ready: exitCode(features) === 0 };
}

const MARK = { ok: '✓', warn: '!', fail: '✗' } as const;
const FEATURE_MARK = { ready: '✓', degraded: '!', unavailable: '✗' } as const;

const GROUPS: [string, (id: string) => boolean][] = [
  ['system', (id) => !id.includes('.') && id !== 'tcx'],
  ['eBPF program types', (id) => id.startsWith('prog.')],
  ['eBPF hooks', (id) => id.startsWith('attach.') || id === 'tcx'],
  ['eBPF maps', (id) => id.startsWith('map.')],
  ['eBPF helpers', (id) => id.startsWith('helper.')],
  ['eBPF commands', (id) => id.startsWith('link.') || id.startsWith('test_run.')],
  ['datapath objects', (id) => id.startsWith('object.')],
  ['tools', (id) => id.startsWith('tool.')],
];

/** Human output: checks by group, the feature table, a closing verdict line. */
export function formatHuman(r: Report): string {
  const out: string[] = [];
  const placed = new Set<string>();
  const groups = GROUPS.map(([title, match]) => {
    const cs = r.checks.filter((c) => !placed.has(c.id) && match(c.id));
    cs.forEach((c) => placed.add(c.id));
    return [title, cs] as const;
  });
  const rest = r.checks.filter((c) => !placed.has(c.id));
  if (rest.length > 0) groups.push(['other', rest]);
  const width = Math.max(...r.checks.map((c) => c.id.length));
  for (const [title, cs] of groups) {
    if (cs.length === 0) continue;
    out.push(title);
    // Without privilege every eBPF check says the same: one line per group.
    if (cs.length > 1 && cs.every((c) => !c.ok && c.detail === cs[0].detail && c.detail.startsWith('not probed'))) {
      const worst = cs.some((c) => severity(c) === 'fail') ? 'fail' : 'warn';
      out.push(`  ${MARK[worst]} ${`(${cs.length} checks)`.padEnd(width)}  ${cs[0].detail}`);
    } else {
      for (const c of cs) out.push(`  ${MARK[severity(c)]} ${c.id.padEnd(width)}  ${c.detail}`);
    }
    out.push('');
  }

  out.push('features (* = needed by the default sidecar eBPF mode)');
  const nameWidth = Math.max(...r.features.map((f) => f.name.length));
  for (const f of r.features) {
    const tail = f.advice ? `${f.status}: ${f.advice}` : f.status;
    out.push(`  ${FEATURE_MARK[f.status]} ${f.id.padEnd(2)} ${f.required ? '*' : ' '} ${f.name.padEnd(nameWidth)}  ${tail}`);
  }
  out.push('');
  out.push(verdict(r));
  return `${out.join('\n')}\n`;
}

function verdict(r: Report): string {
  const count = (s: FeatureVerdict['status']) => r.features.filter((f) => f.status === s).length;
  const req = r.features.filter((f) => f.required);
  const missing = req.filter((f) => f.status === 'unavailable').map((f) => f.id);
  const tally = `${count('ready')} ready, ${count('degraded')} degraded, ${count('unavailable')} unavailable`;
  return missing.length === 0
    ? `verdict: ready — all ${req.length} required features can run here (${tally})`
    : `verdict: NOT ready — required feature${missing.length > 1 ? 's' : ''} ${missing.join(', ')} unavailable (${tally})`;
}
