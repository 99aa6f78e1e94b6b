// SPDX-License-Identifier: Apache-2.0
// The A/B benchmark (B1): every round creates each scenario's pods afresh and
// measures every test in both placements; the scenarios are interleaved within a
// round (and their order rotates from round to round), so slow drifts of the
// machine hit every scenario alike. Then the tc programs' per-packet cost.
import os from 'node:os';
import { benchTcPrograms, type TcProgResult } from './tcprog.ts';
import { buildFigures, evaluateGoals, testSpecs, type LegResult, type CpuUse, type Figure, type Goal, type Sample, type TestSpec } from './figures.ts';
import { legLatency } from '../datapath/sidecar/sockgate.ts';
import { APP_UID, BenchLab, PROFILE, ambientEngineOf, engineOf, type Scenario, type Block, type CpuSnapshot, type Placement } from './topology.ts';
import { bpfNsBetween, enableBpfStats } from './bpfstats.ts';
import { runIperf, runWrk, toolVersion } from './tools.ts';
import { withNetns } from '../sys/netns.ts';

export interface BenchOptions {
  rounds: number;
  /** Seconds per measurement (whole seconds: wrk and iperf3 take no fractions). */
  durationS: number;
  /** Keep-alive connection counts. */
  conns: number[];
  /** Concurrent connections of the connection-rate test. */
  connConcurrency: number;
  scenarios: Scenario[];
  placements: Placement[];
  /** Run the tc program section. */
  tc: boolean;
  tcRepeat: number;
  tcSingleRuns: number;
  /** Lab prefix (default: random). */
  prefix?: string;
  /** Another build of sidecar.bpf.o to measure (ebpf scenario and tc section). */
  objectPath?: string;
  onProgress?: (p: Progress) => void;
}

export const QUICK: Omit<BenchOptions, 'scenarios' | 'placements'> = {
  rounds: 3, durationS: 1, conns: [1, 10, 100], connConcurrency: 10, tc: true, tcRepeat: 1_000_000, tcSingleRuns: 20_000,
};
export const FULL: Omit<BenchOptions, 'scenarios' | 'placements'> = {
  ...QUICK, rounds: 5, durationS: 3, tcSingleRuns: 100_000,
};

export interface Progress {
  /** Measurements done and planned (the tc section counts as one). */
  done: number;
  total: number;
  round: number;
  rounds: number;
  what: string;
  elapsedS: number;
  /** Estimated seconds left. */
  etaS: number;
}

export interface BenchReport {
  tool: 'meshwarp bench';
  version: 1;
  startedAt: string;
  wallS: number;
  machine: { kernel: string; cpus: number; cpuModel: string; memMB: number };
  tools: Record<string, string>;
  options: Omit<BenchOptions, 'onProgress'>;
  setup: {
    labPrefix: string;
    profile: string;
    proxyUid: number;
    appUid: number;
    sidecar: string;
    server: string;
    topology: string;
    notes: string[];
  };
  scenarios: Scenario[];
  placements: Placement[];
  tests: TestSpec[];
  figures: Figure[];
  goals: Goal[];
  tc: TcProgResult | null;
  /** eBPF datapath counters (both nodes) accumulated during each round's ebpf / ebpf+sockmap block. */
  datapath: { round: number; scenario?: string; counters: Record<string, number> }[];
  /**
   * S4: how ebpf+sockmap ran. The bench always forces S4 on in those blocks (mode 'forced') so the
   * scenario is measured on every kernel; `safe` is false when the behaviour gate fails here, i.e.
   * the figures are of a configuration the agent would not run by itself (`gate.failed` says why).
   * Also the leg micro-benchmark.
   */
  sockmap?: {
    mode: 'forced';
    safe: boolean;
    note: string;
    gate: { pass: boolean; reason: string; failed: string[] } | null;
    leg: LegResult | null;
  };
  samples: Sample[];
  errors: string[];
}

/** Runs the benchmark; the lab is always torn down, also when a step fails. */
export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const t0 = performance.now();
  const startedAt = new Date().toISOString();
  const tests = testSpecs(o.conns, o.connConcurrency);
  const errors: string[] = [];
  const samples: Sample[] = [];
  const datapath: BenchReport['datapath'] = [];
  const total = o.rounds * o.scenarios.length * o.placements.length * tests.length + (o.tc ? 1 : 0);
  let done = 0;
  // Seconds a measurement takes, learned as we go (for the estimate).
  let perMeasurement = o.durationS + 0.3;
  const progress = (round: number, what: string) => {
    const elapsedS = (performance.now() - t0) / 1000;
    const left = total - done;
    o.onProgress?.({ done, total, round, rounds: o.rounds, what, elapsedS, etaS: left * perMeasurement });
  };

  const bl = await BenchLab.create(o.scenarios, o.prefix, o.objectPath);
  let tools: Record<string, string> = {};
  let tc: TcProgResult | null = null;
  let leg: LegResult | null = null;
  let gate: NonNullable<BenchReport['sockmap']>['gate'] = null;
  let measureStart = 0;
  let measured = 0;
  let stopBpfStats: (() => void) | undefined;
  try {
    const node1 = bl.lab.node('node1');
    tools = {
      haproxy: (await toolVersion(node1, ['haproxy', '-v'])).replace(/ version/, '').replace(/ \d{4}\/\d\d\/\d\d.*/, ''),
      wrk: (await toolVersion(node1, ['wrk', '-v'])).replace(/ Copyright.*/, ''),
      iperf3: (await toolVersion(node1, ['iperf3', '-v'])).replace(/ \(.*/, ''),
    };
    if (o.scenarios.includes('ebpf+sockmap')) {
      const st = bl.drivers.get('ebpf/node1')?.features.sockmapState?.();
      if (st?.gate) {
        const bad = st.gate.checks.filter((c) => !c.ok);
        gate = {
          pass: st.gate.pass,
          reason: st.gate.pass ? `all ${st.gate.checks.length} checks passed` : bad.length ? bad.map((c) => `IPv${c.family} ${c.check}: ${c.detail}`).join('; ') : st.reason,
          failed: bad.map((c) => `IPv${c.family} ${c.check}`),
        };
      }
      progress(0, 'sockmap leg micro-benchmark');
      try {
        leg = await legLatency(o.rounds, 20_000, o.objectPath); // its own private netns
      } catch (e) {
        errors.push(`sockmap leg: ${(e as Error).message}`);
      }
    }
    if (o.tc) {
      progress(0, 'tc programs');
      try {
        // Test runs never send anything, but their skb sits on the loopback
        // of the caller's netns: make that a lab netns all the same.
        tc = withNetns(node1.netnsPath, () =>
          benchTcPrograms({ repeat: o.tcRepeat, singleRuns: o.tcSingleRuns, objectPath: o.objectPath, onProgress: (w) => progress(0, w) }));
      } catch (e) {
        errors.push(`tc programs: ${(e as Error).message}`);
      }
      done++;
    }
    measureStart = performance.now();
    stopBpfStats = enableBpfStats();
    for (let round = 1; round <= o.rounds; round++) {
      const order = scenarioOrder(round - 1, o.scenarios.length).map((i) => o.scenarios[i]);
      for (const scenario of order) {
        progress(round, `${scenario}: setting up pods and sidecars`);
        let block: Block;
        try {
          block = await bl.block(scenario, round);
          // Let the kernel finish tearing down the previous block's netns
          // (conntrack, sockets) before measuring, so it is not billed to this one.
          await new Promise((r) => setTimeout(r, SETTLE_MS));
        } catch (e) {
          // One broken block does not void a long run: its cells stay empty.
          const error = `setup failed: ${(e as Error).message}`;
          errors.push(`round ${round}, ${scenario}: ${error}`);
          for (const placement of o.placements) for (const t of tests) samples.push({ round, scenario, placement, test: t.id, error });
          done += o.placements.length * tests.length;
          continue;
        }
        const ebpf = engineOf(scenario) === 'ebpf' || ambientEngineOf(scenario) === 'ebpf';
        const statsBefore = ebpf ? bl.datapathStats() : {};
        try {
          for (const placement of o.placements) {
            const target = block.targets[placement];
            for (const t of tests) {
              progress(round, `${scenario} · ${placement} · ${describe(t)} (${o.durationS} s)`);
              const s: Sample = { round, scenario, placement, test: t.id };
              const before = block.cpu(placement);
              const t1 = performance.now();
              try {
                if (t.kind === 'bulk') {
                  s.iperf = await runIperf(block.client, { ...target.bulk, durationS: o.durationS, uid: APP_UID });
                } else {
                  s.wrk = await runWrk(block.client, {
                    url: target.url, connections: t.connections, durationS: o.durationS, script: bl.wrkScript,
                    close: t.kind === 'conn', uid: APP_UID,
                  });
                }
                const after = block.cpu(placement);
                s.cpu = cpuUse(before, after);
              } catch (e) {
                s.error = (e as Error).message;
                errors.push(`round ${round}, ${scenario}, ${placement}, ${t.id}: ${s.error}`);
              }
              s.ms = Math.round(performance.now() - t1);
              samples.push(s);
              done++;
              measured++;
              perMeasurement = (performance.now() - measureStart) / 1000 / measured;
            }
          }
          if (ebpf) {
            const after = bl.datapathStats();
            const delta: Record<string, number> = {};
            for (const [k, v] of Object.entries(after)) if (v - (statsBefore[k] ?? 0) !== 0) delta[k] = v - (statsBefore[k] ?? 0);
            datapath.push({ round, scenario, counters: delta });
          }
        } finally {
          await block.teardown();
        }
      }
    }
  } finally {
    stopBpfStats?.();
    await bl.destroy();
  }

  const figures = buildFigures(samples, tests, o.placements);
  const cpus = os.cpus();
  const { onProgress: _drop, ...options } = o;
  return {
    tool: 'meshwarp bench',
    version: 1,
    startedAt,
    wallS: (performance.now() - t0) / 1000,
    machine: {
      kernel: os.release(),
      cpus: cpus.length,
      cpuModel: cpus[0]?.model ?? 'unknown',
      memMB: Math.round(os.totalmem() / 2 ** 20),
    },
    tools,
    options,
    setup: {
      labPrefix: bl.prefix,
      profile: PROFILE,
      proxyUid: bl.policy.proxyUid,
      appUid: APP_UID,
      sidecar: `haproxy, mode tcp, 1 thread, uid ${bl.policy.proxyUid}; transparent (server 0.0.0.0:0, SO_ORIGINAL_DST) ` +
        `on ${bl.policy.outboundPort}/${bl.policy.inboundPort} in iptables and ebpf scenarios, explicit relays in direct+sidecar`,
      server: `haproxy, mode http, 1 thread, fixed 200 "ok" on :8080; iperf3 -s on :5201 (uid ${APP_UID})`,
      topology: 'lab with node1 and node2; client pod on node1; server pods on node1 (same-node) and node2 (cross-node); fresh pods per scenario and round',
      notes: [
        'direct and direct+sidecar and iptables pods run in a cgroup outside the nodes\' cgroups: no eBPF program sees them',
        'the eBPF drivers are started once for the run; iptables rules live in each pod\'s netns and go with it',
        'wrk -t1; latency percentiles from wrk\'s histogram (done() hook); conn test sends Connection: close (one request per connection)',
        'ambient/iptables and ambient/ebpf: no sidecars; one node proxy per node and engine (haproxy, mode tcp, 1 thread, the same L4 relay config), started once; ' +
          'in-pod redirection opens its listeners in each enrolled pod netns, eBPF redirection assigns into the proxy\'s own netns; traffic between nodes is plain TCP (no HBONE) in both',
        'bpf_ns: run time of every meshwarp BPF program (BPF_ENABLE_STATS on for the whole run, which adds two clock reads per program run to the eBPF scenarios)',
      ],
    },
    scenarios: o.scenarios,
    placements: o.placements,
    tests,
    figures,
    goals: evaluateGoals(figures, o.conns, tc ?? undefined, leg ?? undefined,
      o.scenarios.includes('ebpf+sockmap') ? { forced: true, gatePass: gate ? gate.pass : null } : undefined),
    sockmap: o.scenarios.includes('ebpf+sockmap') ? sockmapSection(gate, leg) : undefined,
    tc,
    datapath,
    samples,
    errors,
  };
}

const SETTLE_MS = 250;

function sockmapSection(gate: NonNullable<BenchReport['sockmap']>['gate'], leg: LegResult | null): NonNullable<BenchReport['sockmap']> {
  const safe = gate?.pass === true;
  const note = safe
    ? 'S4 forced on in the ebpf+sockmap blocks; the behaviour gate passes on this kernel, so the agent would turn it on by itself (--sockmap auto)'
    : `S4 FORCED ON in the ebpf+sockmap blocks although the behaviour gate ${gate ? 'fails' : 'did not run'} on this kernel: UNSAFE, ` +
      'a configuration the agent never runs by itself (--sockmap auto keeps S4 off); the figures show what S4 would give, not what a node gets' +
      (gate ? ` (failed: ${gate.failed.join(', ')})` : '');
  return { mode: 'forced', safe, note, gate, leg };
}

/**
 * The order of the scenarios in a round: rows of a Williams square, so over n
 * rounds (2n for an odd n) every scenario runs first once and follows every other
 * scenario equally often: what one scenario leaves behind (e.g. a netns still being
 * torn down) does not always weigh on the same next scenario.
 */
export function scenarioOrder(round: number, n: number): number[] {
  const base: number[] = [];
  for (let i = 0, lo = 0, hi = n - 1; i < n; i++) base.push(i % 2 === 0 ? lo++ : hi--);
  // base = 0, n-1, 1, n-2, ...: consecutive differences are all distinct mod n.
  const row = base.map((x) => (x + round) % n);
  return n % 2 === 1 && Math.floor(round / n) % 2 === 1 ? row.reverse() : row;
}

function cpuUse(a: CpuSnapshot, b: CpuSnapshot): CpuUse {
  const d = (k: keyof CpuSnapshot['roles']) => Math.max(0, b.roles[k] - a.roles[k]);
  return {
    labUs: b.labUs - a.labUs,
    roles: { load: d('load'), clientSidecar: d('clientSidecar'), serverSidecar: d('serverSidecar'), app: d('app') },
    machineBusyUs: b.machine.busyUs - a.machine.busyUs,
    machineTotalUs: b.machine.totalUs - a.machine.totalUs,
    machineStealUs: b.machine.stealUs - a.machine.stealUs,
    bpfNs: bpfNsBetween(a.bpf, b.bpf),
  };
}

function describe(t: TestSpec): string {
  if (t.kind === 'rr') return `wrk ${t.connections} keep-alive conn${t.connections === 1 ? '' : 's'}`;
  if (t.kind === 'conn') return `wrk ${t.connections} conns, 1 request each`;
  return 'iperf3 bulk';
}
