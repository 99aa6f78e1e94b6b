// SPDX-License-Identifier: Apache-2.0
// `meshwarp doctor [--json] [--fix]`: can this machine run meshwarp?
// Exit 0 when every feature of the default sidecar eBPF mode can run, 1 when
// one cannot, 2 on bad usage. Read-only unless --fix (mounts bpffs).
import { parseArgs } from 'node:util';

const HELP = `usage: meshwarp doctor [--json] [--fix]

Checks the kernel (BTF, cgroup2, bpffs, eBPF program types, hooks, maps,
helpers, tcx), loads the built datapath objects without attaching them, and
looks for iptables, iproute2, clang and the CNI plugins. Then says, for every
feature of meshwarp, whether this machine can run it: ready, degraded (runs
with a fallback) or unavailable, and what to do.

options:
  --json   print the report as JSON (keys documented in docs/doctor.md)
  --fix    mount bpffs at /sys/fs/bpf when it is missing (the only change)
  --help   this text

exit code: 0 ready, 1 a required feature is unavailable, 2 bad usage
`;

export async function run(argv: string[]): Promise<number> {
  let values: { json?: boolean; fix?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv, strict: true, allowPositionals: false,
      options: { json: { type: 'boolean' }, fix: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (e) {
    process.stderr.write(`meshwarp doctor: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  // Loaded here so `--help` does not pay for libbpf.
  const { runProbes } = await import('../doctor/probes.ts');
  const { buildReport, formatHuman } = await import('../doctor/report.ts');
  const report = buildReport(await runProbes({ fix: values.fix === true }));
  // S4 is decided by behaviour, not by probes: run the agent's gate too (private netns, nothing kept).
  const { runSockmapGate } = await import('../datapath/sidecar/sockgate.ts');
  const gate = await runSockmapGate();
  const sockmapGate = { pass: gate.pass, reason: gate.reason, kernel: gate.kernel, failed: gate.checks.filter((c) => !c.ok).map((c) => `IPv${c.family} ${c.check}: ${c.detail}`) };
  process.stdout.write(values.json ? `${JSON.stringify({ ...report, sockmapGate }, null, 2)}\n`
    : `${formatHuman(report)}\nS4 behaviour gate on ${gate.kernel}: ${gate.pass ? 'pass' : 'FAIL'} — ${gate.pass ? gate.reason : 'the agent keeps sockmap acceleration off'}\n${sockmapGate.failed.map((f) => `  ${f}\n`).join('')}`);
  return report.ready ? 0 : 1;
}
