// SPDX-License-Identifier: Apache-2.0
// `meshwarp bench --control-plane`: pod churn through the real CNI chain (loopback, then
// Debian's bridge + host-local, then meshwarp-cni) against a real agent on one lab node.
// Churn: every 1/rate s one pod ADD starts and, if one is captured, the oldest churn pod's DEL
// starts; then `hold` pods are added and held while the agent's RSS is read; then every pod is
// deleted and the node counted again: anything above the count before the first pod is a leak.
// Captured = the chain's ADD returned, the agent's state file lists the sandbox and its tc links
// are pinned (the programs that redirect its connects): a file read each, no process spawned.
// Gone = the chain's DEL returned, the netns is deleted and the pins are gone.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DEFAULTS } from '../agent/config.ts';
import { TRIM_IDLE_MS } from '../agent/trim.ts';
import { tcxPrograms } from '../bpf/index.ts';
import { machineCpuUs } from './topology.ts';
import { LAB_NETWORK, Lab, LabAgent, labNetns, loadConflist, runChain, type ChainContext, type Conflist, type LabNode, type LabPod } from '../lab/index.ts';
import { run } from '../sys/exec.ts';
import { withNetns } from '../sys/netns.ts';
import { churnGoals, latency, leaks, type ChurnFigures, type Latency, type NodeCounts, type PhaseFigures } from './churn-report.ts';
import type { Goal } from './figures.ts';

export interface ChurnOptions {
  /** Pods added (and deleted) per second. */
  rate: number;
  durationS: number;
  hold: number;
  prefix?: string;
  progress?: (line: string) => void;
}

export interface ChurnReport extends ChurnFigures {
  options: Omit<ChurnOptions, 'progress'>;
  /** Agent CPU time over the churn phase / its wall time, in % of one core. */
  cpuPercent: number;
  /** Whole-chain blocks: how late their last ticks were, summed (s): > 0 = the bench's driver could not issue at the rate. */
  driverLagS: number;
  /** Agent CPU time per pod (its ADD and DEL) while meshwarp-cni ran alone, in ms. */
  agentCpuMsPerPod: number;
  /** Churn ticks that found MAX_INFLIGHT chain runs going and started nothing. */
  skippedTicks: number;
  /** Agent RSS with no pod (after one was added and deleted), for scale. */
  rssIdleMB: number;
  /** The agent's own memory figures at `hold` pods (its metrics): V8 heap used and reserved, buffers; MB. */
  heldMemory: { heapUsedMB: number; heapTotalMB: number; externalMB: number } | undefined;
  /**
   * The RSS at `hold` pods split as the kernel counts it (/proc/PID/status): anonymous memory (the
   * agent's own) and file pages (most of them Node's binary, shared and reclaimable); and the
   * most it reached since the agent started (VmHWM: during the churn, before idle trimming), MB.
   */
  heldRss: { anonMB: number; fileMB: number; peakMB: number };
  baseline: NodeCounts;
  after: NodeCounts;
  /**
   * Wall time of each step of a pod's ADD and DEL (src/lab/lab.ts CniStepFn): `alone` with one
   * pod at a time before the churn (service times), `churn` during it (with queueing).
   */
  steps: { alone: Record<string, Latency>; churn: Record<string, Latency> };
  /**
   * Pods/s the agent can add and delete at most: it serializes every ADD and DEL (its
   * reconciler queue) on one thread, so 1000 / its CPU ms per pod (ADD + DEL, meshwarp-cni alone).
   * Above it the agent's queue grows. The plugin processes run beside it, on other cores.
   */
  agentCapacity: number;
  /**
   * CPU time of the whole machine (every process and the kernel, the bench's driver too) per pod
   * added and deleted, in ms, per kind of phase; and the rate this machine's CPUs could carry at
   * that cost (cores × 1000 / ms). Shows whether a rate is out of this machine's reach whatever
   * the driver does.
   */
  machineCpu: { cores: number; chain: number; full: number; agentOnly: number; chainCapPerS: number; fullCapPerS: number };
  /** Counts at `hold` pods minus the baseline, per held pod. */
  perHeldPod: Record<string, number>;
  loadavg: { start: number[]; end: number[] };
  errors: string[];
  goals: Goal[];
}

export const CHURN_FULL: ChurnOptions = { rate: 100, durationS: 60, hold: 250 };

/** Chain runs (each several processes) at once; the machine's limit, not the bench's goal. */
const MAX_INFLIGHT = 32;

/** Sandboxes made once for the meshwarp-cni-alone phase (more than are ever in flight there). */
const POOL = 48;

/** Pods added and deleted one at a time before the churn, for the steps' service times. */
const ALONE = 10;

const stepLatencies = (steps: Record<string, number[]>): Record<string, Latency> =>
  Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, latency(v)]));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The agent's V8 heap and buffer figures from its metrics endpoint (in the node's netns), MB. */
async function agentMemory(n: LabNode): Promise<ChurnReport['heldMemory']> {
  const r = await n.run(['curl', '-sS', '-m', '5', `http://${DEFAULTS.metrics}/metrics`]);
  const v = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(r.stdout)?.[1] ?? NaN) / 2 ** 20;
  return r.code === 0 ? { heapUsedMB: v('nodejs_heap_size_used_bytes'), heapTotalMB: v('nodejs_heap_size_total_bytes'), externalMB: v('nodejs_external_memory_bytes') } : undefined;
}

function rssSplit(pid: number): ChurnReport['heldRss'] {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? NaN) / 1024;
  return { anonMB: kb('RssAnon'), fileMB: kb('RssFile') + kb('RssShmem'), peakMB: kb('VmHWM') };
}

/** Busy CPU time of the whole machine so far, s (every process and the kernel). */
const machineBusyS = (): number => machineCpuUs().busyUs / 1e6;

function procStat(pid: number): { cpuS: number; rssMB: number } {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
  const tick = 100; // USER_HZ
  return { cpuS: (Number(x[11]) + Number(x[12])) / tick, rssMB: (Number(x[21]) * 4096) / 2 ** 20 };
}

function countFiles(dir: string): number {
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? countFiles(join(dir, e.name)) : 1;
  return n;
}

function stateIds(agent: LabAgent): string[] {
  try {
    const v = JSON.parse(readFileSync(join(agent.stateDir, 'pods.json'), 'utf8')) as { pods: { key?: { sandboxId?: string } }[] };
    return v.pods.map((p) => p.key?.sandboxId ?? '');
  } catch {
    return [];
  }
}

/**
 * The sandboxes in the agent's state file, parsed again only when the file changed (the store
 * writes a new file and renames it: a new inode): every pod waiting on capture polls it each ms.
 */
function stateWatch(agent: LabAgent): () => ReadonlySet<string> {
  let seen = '';
  let ids = new Set<string>();
  return () => {
    let st;
    try { st = statSync(join(agent.stateDir, 'pods.json'), { bigint: true }); } catch { return (ids = new Set()); }
    const tag = `${st.ino}/${st.mtimeNs}/${st.size}`;
    if (tag !== seen) { seen = tag; ids = new Set(stateIds(agent)); }
    return ids;
  };
}

const pinDir = (agent: LabAgent, id: string) => `${agent.pinRoot}/links/tc/${encodeURIComponent(id).replace(/\./g, '%2E')}`;
const pinned = (agent: LabAgent, id: string) => existsSync(pinDir(agent, id)) && readdirSync(pinDir(agent, id)).length >= 2;

/** BPF programs on both tc hooks of every veth of the node: tcx (in-process) and cls_bpf (`tc -j`). */
function tcPrograms(n: LabNode): number {
  const veths = (JSON.parse(run(['ip', '-n', n.netns, '-j', 'link', 'show', 'type', 'veth'])) as { ifname: string; ifindex: number }[]);
  let total = 0;
  for (const v of veths) {
    for (const dir of ['ingress', 'egress'] as const) {
      try { total += withNetns(n.netnsPath, () => tcxPrograms(v.ifindex, dir)).length; } catch { /* no tcx */ }
      try {
        const f = JSON.parse(run(['ip', 'netns', 'exec', n.netns, 'tc', '-j', 'filter', 'show', 'dev', v.ifname, dir]) || '[]') as { kind?: string; options?: unknown }[];
        total += f.filter((x) => x.kind === 'bpf' && x.options !== undefined).length;
      } catch { /* no clsact */ }
    }
  }
  return total;
}

async function counts(lab: Lab, n: LabNode, agent: LabAgent): Promise<NodeCounts> {
  const st = await agent.request<{ maps: Record<string, number> }>('GET', '/v1/status');
  const ipamDir = join(n.cni!.ipamDir, LAB_NETWORK);
  return {
    mapEntries: Object.values(st.maps).reduce((a, b) => a + b, 0),
    links: run(['ip', '-n', n.netns, '-o', 'link', 'show']).trim().split('\n').length,
    pins: countFiles(agent.pinRoot),
    tcFilters: tcPrograms(n),
    stateEntries: stateIds(agent).length,
    fds: readdirSync(`/proc/${agent.process!.pid}/fd`).length,
    netns: labNetns(lab.prefix).length,
    ipam: existsSync(ipamDir) ? readdirSync(ipamDir).filter((f) => /^[0-9a-f.:]+$/.test(f)).length : 0,
  };
}

interface Waiter { t0: number; cond: () => boolean; what: string; limitMs: number; done: (ms: number) => void; fail: (e: Error) => void }

/**
 * Waits for conditions, all polled by one timer each ms (a timer per pod would be a poll per pod
 * per ms: at 32 in flight the bench's own event loop saturates and the churn it drives slows).
 */
class Poller {
  readonly #waiting = new Set<Waiter>();
  #timer: NodeJS.Timeout | undefined;

  /**
   * Resolves with the ms since `t0` once `cond` holds, or rejects after `limitMs`. A hang guard,
   * not a goal: at load 27 (run 3, docs/benchmark.md) DELs waited > 10 s in the agent's queue
   * and were counted as failures although each completed; slowness belongs in the p99.
   */
  until(t0: number, cond: () => boolean, what: string, limitMs = 60_000): Promise<number> {
    return new Promise((done, fail) => {
      this.#waiting.add({ t0, cond, what, limitMs, done, fail });
      this.#timer ??= setInterval(() => this.#poll(), 1);
    });
  }

  #poll(): void {
    const now = performance.now();
    for (const w of this.#waiting) {
      if (w.cond()) { this.#waiting.delete(w); w.done(now - w.t0); }
      else if (now - w.t0 > w.limitMs) { this.#waiting.delete(w); w.fail(new Error(`${w.what}: not within ${w.limitMs} ms`)); }
    }
    if (this.#waiting.size === 0) { clearInterval(this.#timer); this.#timer = undefined; }
  }
}

/**
 * Gives host-local a second IPv4 range, the /24 below the node's (the lab conflist hands out
 * .100-.254 of the node's /24 only), so `hold` pods fit; IPv6 (/64) already does. bridge
 * refuses a second IPv4 gateway address (or another prefix) on the bridge, so it is told not to
 * set any (isGateway false): the lab put the node's gateways on the bridge already, and the
 * bench checks capture, not traffic, for the pods of the second range.
 */
function widenIpam(n: LabNode, want: number): void {
  if (want <= 150) return;
  const file = join(n.cni!.confDir, '10-lab.conflist');
  const list = JSON.parse(readFileSync(file, 'utf8')) as { plugins: { isGateway?: boolean; ipam?: { ranges: Record<string, string>[][] } }[] };
  list.plugins[0].isGateway = false;
  const set = list.plugins[0].ipam!.ranges[0];
  const [a, b, c] = set[0].subnet.split('.').map(Number);
  if (c === 0) throw new Error(`no /24 below ${set[0].subnet}`);
  set.push({ subnet: `${a}.${b}.${c - 1}.0/24`, rangeStart: `${a}.${b}.${c - 1}.10`, rangeEnd: `${a}.${b}.${c - 1}.254`, gateway: `${a}.${b}.${c - 1}.1` });
  writeConflist(n, list as unknown as Conflist);
}

/** Writes the node's conflist (temp file, then rename: a runtime never reads half of it). */
function writeConflist(n: LabNode, list: Conflist): void {
  const file = join(n.cni!.confDir, '10-lab.conflist');
  run(['sh', '-c', 'cat > "$1.tmp" && mv "$1.tmp" "$1"', 'sh', file], { input: `${JSON.stringify(list, null, 2)}\n` });
}

/**
 * One churn phase's raw figures. A rate is the operations started over the time from the first
 * one's start to one period after the last tick (DELs start once the first ADD is done): `addS`,
 * `delS`. `wallS` also holds the wait for the last operations.
 */
interface PhaseRun { adds: number; dels: number; addS: number; delS: number; wallS: number; lagS: number; addMs: number[]; delMs: number[]; failures: number; skipped: number }
const newRun = (): PhaseRun => ({ adds: 0, dels: 0, addS: 0, delS: 0, wallS: 0, lagS: 0, addMs: [], delMs: [], failures: 0, skipped: 0 });

/**
 * Churn at `rate`: every 1/rate s one `add` starts and, if one finished, the oldest added item's
 * `del`. Open loop, but bounded: a tick that finds MAX_INFLIGHT operations running skips its
 * ADD (and DEL), which shows as a lower achieved rate instead of an ever-growing backlog. `add`
 * resolves with its item once done (undefined when it failed or had nothing to add: a failure is
 * counted in `r` by `fail`); fills `r`; at the end every item still there is deleted (timed, not
 * in the DEL rate).
 */
async function churnPhase<P>(
  r: PhaseRun, rate: number, durationS: number, ops: { add: () => Promise<{ item: P; ms: number } | undefined>; del: (p: P) => Promise<number | undefined> },
  say: (l: string) => void,
): Promise<PhaseRun> {
  const live: P[] = [];
  const inflight = new Set<Promise<void>>();
  const track = (p: Promise<void>) => { inflight.add(p); void p.finally(() => inflight.delete(p)); };
  const del = (item: P) => track(ops.del(item).then((ms) => { if (ms !== undefined) r.delMs.push(ms); }));
  const t0 = performance.now();
  const period = 1000 / rate;
  let firstAdd: number | undefined;
  let firstDel: number | undefined;
  let kFirstDel = 0;
  // A fixed number of ticks: a loop a little late at the end still issues them all (its window
  // grows); a driver that cannot keep up at all stops at 1.5 × the duration, its rate lower.
  const ticks = Math.round(durationS * rate);
  let lastTick = t0;
  let k = 0;
  for (; k < ticks && performance.now() - t0 < durationS * 1500; k++) {
    lastTick = performance.now();
    if (inflight.size < MAX_INFLIGHT) {
      firstAdd ??= performance.now();
      r.adds++;
      track(ops.add().then((x) => { if (x) { r.addMs.push(x.ms); live.push(x.item); } }));
    } else r.skipped++;
    // One DEL per tick from the first on; a tick that found nothing to delete (ADDs slower for a
    // while) is made up later, so DELs keep the asked rate as long as ADDs do.
    if (firstDel === undefined && live.length > 0) { firstDel = performance.now(); kFirstDel = k; }
    while (firstDel !== undefined && r.dels < k - kFirstDel + 1 && live.length > 0 && inflight.size < MAX_INFLIGHT) { del(live.shift()!); r.dels++; }
    await sleep(Math.max(0, t0 + (k + 1) * period - performance.now()));
    if (k % rate === 0) say(`  ${Math.round((performance.now() - t0) / 1000)} s: ${r.adds} adds, ${r.dels} dels started, ${inflight.size} in flight, ${r.skipped} ticks skipped`);
  }
  // Each op's window ends one period after the last tick issued: on schedule, ticks × period.
  const end = lastTick + period;
  r.lagS = (lastTick - (t0 + (k - 1) * period)) / 1000 + (ticks - k) * period / 1000; // how late the last tick was: > 0 = the driver could not keep up
  r.addS = (end - (firstAdd ?? end)) / 1000;
  r.delS = (end - (firstDel ?? end)) / 1000;
  while (inflight.size > 0) await Promise.all([...inflight]);
  r.wallS = (performance.now() - t0) / 1000;
  for (const item of live.splice(0)) del(item); // timed, not in the rate
  while (inflight.size > 0) await Promise.all([...inflight]);
  return r;
}

const phaseFigures = (r: PhaseRun): PhaseFigures => ({
  driverLagS: r.lagS, addRate: r.adds / r.addS, delRate: r.dels / r.delS, add: latency(r.addMs), del: latency(r.delMs), failures: r.failures, skippedTicks: r.skipped,
});

export async function runChurn(o: ChurnOptions): Promise<ChurnReport> {
  const say = o.progress ?? (() => {});
  const start = loadavg();
  const lab = await Lab.create({ prefix: o.prefix ?? `mwch${randomBytes(1).toString('hex')}` });
  const errors: string[] = [];
  try {
    const n = lab.addNode('node1');
    const agent = new LabAgent(n, { bundle: true }); // what the image runs (src/bundle.ts)
    await agent.start();
    let steps: Record<string, number[]> = {};
    lab.enableCni(n, { agentSocket: agent.socket, failurePolicy: 'closed', onStep: (k, ms) => { (steps[k] ??= []).push(ms); } });
    widenIpam(n, o.hold);
    const full = loadConflist(n.cni!.confDir);
    const mwConf = full.plugins.find((p) => p.type === 'meshwarp-cni');
    if (!mwConf) throw new Error(`no meshwarp-cni in ${n.cni!.confDir}`);
    const chainOnly: Conflist = { ...full, plugins: full.plugins.filter((p) => p !== mwConf) };
    const pid = agent.process!.pid!;
    // One pod first, so lazily made things (maps opened, sockets) are in the baseline; then
    // a few one at a time, for each step's service time without contention.
    await lab.removePodCni(await lab.addPodCni(n, 'warmup', { namespace: 'churn' }));
    steps = {};
    for (let i = 0; i < ALONE; i++) await lab.removePodCni(await lab.addPodCni(n, `alone${i}`, { namespace: 'churn' }));
    const alone = stepLatencies(steps);
    steps = {};
    const baseline = await counts(lab, n, agent);
    const rssIdleMB = procStat(pid).rssMB;

    const poller = new Poller();
    const state = stateWatch(agent);
    let seq = 0;
    const fail = (r: PhaseRun, e: unknown) => { r.failures++; if (errors.length < 20) errors.push((e as Error).message.slice(0, 400)); };
    const captured = (id: string) => pinned(agent, id) && state().has(id);
    // The whole chain (captured = ADD returned, state entry, tc pins), or the chain without meshwarp-cni (ADD returned).
    const chainOps = (r: PhaseRun, mesh: boolean) => ({
      add: async () => {
        const t0 = performance.now();
        let pod: LabPod | undefined;
        try {
          pod = await lab.addPodCni(n, `p${++seq}`, { namespace: 'churn' });
          const id = pod.cni!.containerId;
          return { item: pod, ms: mesh ? await poller.until(t0, () => captured(id), `pod ${pod.name} captured`) : performance.now() - t0 };
        } catch (e) {
          fail(r, e);
          if (pod) void lab.removePodCni(pod).catch(() => {}); // not counted as a leak as well
          return undefined;
        }
      },
      del: async (pod: LabPod) => {
        const t0 = performance.now();
        try {
          await lab.removePodCni(pod);
          const id = pod.cni!.containerId;
          return await poller.until(t0, () => !existsSync(pinDir(agent, id)) && !existsSync(pod.netnsPath), `pod ${pod.name} gone`);
        } catch (e) { fail(r, e); return undefined; }
      },
    });

    // Chain only and whole chain alternate in blocks (ABBA), the same rate and time each: what
    // this machine's chain sustains without meshwarp is the baseline of the whole chain's rate.
    const blockS = o.durationS / 2;
    const runs: { chain: PhaseRun[]; full: PhaseRun[] } = { chain: [], full: [] };
    let cpuS = 0;
    let fullS = 0;
    let churnSteps: Record<string, number[]> = {};
    const machine = { chain: 0, full: 0 };
    for (const kind of ['chain', 'full', 'full', 'chain'] as const) {
      say(`churn, ${kind === 'full' ? 'whole chain' : 'chain without meshwarp-cni'}: ${o.rate} pods/s added and deleted for ${blockS} s`);
      writeConflist(n, kind === 'full' ? full : chainOnly);
      const r = newRun();
      steps = kind === 'full' ? churnSteps : {};
      const cpu0 = procStat(pid).cpuS;
      const m0 = machineBusyS();
      const got = await churnPhase(r, o.rate, blockS, chainOps(r, kind === 'full'), say);
      machine[kind] += machineBusyS() - m0;
      if (kind === 'full') { cpuS += procStat(pid).cpuS - cpu0; fullS += got.wallS; churnSteps = steps; }
      runs[kind].push(got);
    }
    writeConflist(n, full);
    const cpuPercent = (cpuS / fullS) * 100;

    // meshwarp-cni alone, as the chain runs it, on sandboxes the chain made once (netns, veth,
    // address): a fresh sandbox id per ADD on a free one, its DEL frees it. What the agent
    // sustains, without the ~40 ms of plugin processes per pod this machine's CPUs cap.
    say(`churn, meshwarp-cni alone on ${POOL} ready sandboxes: ${o.rate} pods/s added and deleted for ${o.durationS} s`);
    writeConflist(n, chainOnly);
    const pool: LabPod[] = [];
    for (let i = 0; i < POOL; i++) pool.push(await lab.addPodCni(n, `pool${i}`, { namespace: 'churn' }));
    writeConflist(n, full);
    const free = [...pool];
    const mwOnly: Conflist = { ...full, plugins: [mwConf] };
    const ctx: ChainContext = { netnsPath: n.netnsPath, cniPath: n.cni!.cniPath, track: (c) => { lab.track(c); } };
    const ar = newRun();
    const agentCpu0 = procStat(pid).cpuS;
    const agentM0 = machineBusyS();
    type Attached = { pod: LabPod; env: Record<string, string>; result: unknown };
    const agentRun = await churnPhase<Attached>(ar, o.rate, o.durationS, {
      add: async () => {
        const pod = free.shift();
        if (!pod) { fail(ar, new Error(`no free sandbox of ${POOL}`)); return undefined; }
        const t0 = performance.now();
        const id = `${lab.prefix}a${++seq}${randomBytes(6).toString('hex')}`;
        const a = pod.cni!;
        const env = { ...a.env, CNI_CONTAINERID: id, CNI_ARGS: a.env.CNI_ARGS.replaceAll(a.containerId, id) };
        try {
          const result = await runChain(ctx, mwOnly, 'ADD', env, { prevResult: a.result });
          return { item: { pod, env, result }, ms: await poller.until(t0, () => captured(id), `sandbox ${id} captured`) };
        } catch (e) { fail(ar, e); free.push(pod); return undefined; }
      },
      del: async (x) => {
        const t0 = performance.now();
        try {
          await runChain(ctx, mwOnly, 'DEL', x.env, { prevResult: x.result });
          const ms = await poller.until(t0, () => !existsSync(pinDir(agent, x.env.CNI_CONTAINERID)), `sandbox ${x.env.CNI_CONTAINERID} gone`);
          free.push(x.pod);
          return ms;
        } catch (e) { fail(ar, e); return undefined; }
      },
    }, say);
    const agentCpuMsPerPod = ((procStat(pid).cpuS - agentCpu0) * 1000) / agentRun.adds;
    const agentOnlyMachineMs = ((machineBusyS() - agentM0) * 1000) / agentRun.adds;
    writeConflist(n, chainOnly);
    for (const p of pool) await lab.removePodCni(p);
    writeConflist(n, full);

    say(`hold: adding ${o.hold} pods`);
    const hr = newRun();
    const hops = chainOps(hr, true);
    const held: LabPod[] = [];
    const inflight = new Set<Promise<void>>();
    const track = (p: Promise<void>) => { inflight.add(p); void p.finally(() => inflight.delete(p)); };
    for (let i = 0; i < o.hold; i++) {
      track(hops.add().then((x) => { if (x) { hr.addMs.push(x.ms); held.push(x.item); } }));
      if (inflight.size >= 8) await Promise.race([...inflight]);
    }
    while (inflight.size > 0) await Promise.all([...inflight]);
    await sleep(TRIM_IDLE_MS + 1000); // the RSS the held pods keep: the agent trims freed memory once idle (src/agent/trim.ts)
    const rssMB = procStat(pid).rssMB;
    const heldRss = rssSplit(pid);
    const heldMemory = await agentMemory(n);
    const atHold = await counts(lab, n, agent);
    const perHeldPod: Record<string, number> = {};
    for (const [k, v] of Object.entries(atHold)) perHeldPod[k] = held.length ? (v - baseline[k as keyof NodeCounts]) / held.length : NaN;
    say(`held ${held.length} pods: agent RSS ${rssMB.toFixed(1)} MB; deleting them`);
    for (const p of held) {
      track(hops.del(p).then((ms) => { if (ms !== undefined) hr.delMs.push(ms); }));
      if (inflight.size >= 8) await Promise.race([...inflight]);
    }
    while (inflight.size > 0) await Promise.all([...inflight]);
    const after = await counts(lab, n, agent);

    const sum = (rs: PhaseRun[]): PhaseRun => ({
      adds: rs.reduce((a, r) => a + r.adds, 0), dels: rs.reduce((a, r) => a + r.dels, 0), wallS: rs.reduce((a, r) => a + r.wallS, 0),
      addS: rs.reduce((a, r) => a + r.addS, 0), delS: rs.reduce((a, r) => a + r.delS, 0), lagS: rs.reduce((a, r) => a + r.lagS, 0),
      addMs: rs.flatMap((r) => r.addMs), delMs: rs.flatMap((r) => r.delMs), failures: rs.reduce((a, r) => a + r.failures, 0), skipped: rs.reduce((a, r) => a + r.skipped, 0),
    });
    const fullRun = sum(runs.full);
    // Per pair of blocks (ABBA: block 1 with 2, 3 with 4): the whole chain's ADD rate over the chain's alone.
    const addRate = (r: PhaseRun) => r.adds / r.addS;
    const pairRatios = [0, 1].map((i) => addRate(runs.full[i]) / addRate(runs.chain[i]));
    const cores = availableParallelism();
    const perPod = (kind: 'chain' | 'full') => (machine[kind] * 1000) / sum(runs[kind]).adds;
    const machineCpu = {
      cores, chain: perPod('chain'), full: perPod('full'), agentOnly: agentOnlyMachineMs,
      chainCapPerS: (cores * 1000) / perPod('chain'), fullCapPerS: (cores * 1000) / perPod('full'),
    };
    const figures: ChurnFigures = {
      rate: o.rate, addRate: addRate(fullRun), delRate: fullRun.dels / fullRun.delS,
      addToCaptured: latency([...fullRun.addMs, ...hr.addMs]), delToGone: latency([...fullRun.delMs, ...hr.delMs]),
      held: held.length, heldTarget: o.hold, rssMB, leaks: leaks(baseline, after), failures: fullRun.failures + hr.failures + agentRun.failures,
      chainOnly: phaseFigures(sum(runs.chain)), agentOnly: phaseFigures(agentRun),
      chainRatio: { median: median(pairRatios), min: Math.min(...pairRatios), max: Math.max(...pairRatios) },
    };
    return {
      ...figures, options: { rate: o.rate, durationS: o.durationS, hold: o.hold, prefix: lab.prefix },
      cpuPercent, agentCpuMsPerPod, driverLagS: fullRun.lagS, rssIdleMB, heldRss, heldMemory, skippedTicks: fullRun.skipped, steps: { alone, churn: stepLatencies(churnSteps) },
      agentCapacity: 1000 / agentCpuMsPerPod, baseline, after, machineCpu, perHeldPod, loadavg: { start, end: loadavg() }, errors, goals: churnGoals(figures),
    };
  } finally {
    await lab.destroy();
  }
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };

export function formatChurn(r: ChurnReport): string {
  const l = (x: { p50: number; p99: number; max: number; n: number }) => `p50 ${x.p50.toFixed(1)} ms  p99 ${x.p99.toFixed(1)} ms  (max ${x.max.toFixed(1)}, n ${x.n})`;
  const lines = [
    `control plane: ${r.options.rate} pods/s for ${r.options.durationS} s, then ${r.options.hold} held (load ${r.loadavg.start.map((x) => x.toFixed(2)).join(' ')} -> ${r.loadavg.end.map((x) => x.toFixed(2)).join(' ')})`,
    `  achieved        ${r.addRate.toFixed(1)} ADD/s, ${r.delRate.toFixed(1)} DEL/s, ${r.failures} failed, ${r.skippedTicks} ticks skipped (${MAX_INFLIGHT} in flight), driver ${r.driverLagS.toFixed(1)} s behind`,
    `  ADD -> captured ${l(r.addToCaptured)}`,
    `  DEL -> gone     ${l(r.delToGone)}`,
    `  chain without meshwarp-cni (same blocks, ABBA): ${r.chainOnly.addRate.toFixed(1)} ADD/s, ${r.chainOnly.delRate.toFixed(1)} DEL/s, ${r.chainOnly.failures} failed, ${r.chainOnly.skippedTicks} ticks skipped, driver ${r.chainOnly.driverLagS.toFixed(1)} s behind`,
    `    ADD -> returned ${l(r.chainOnly.add)}`,
    `    DEL -> gone     ${l(r.chainOnly.del)}`,
    `    whole chain's ADD rate / this: ${r.chainRatio.median.toFixed(2)}× [${r.chainRatio.min.toFixed(2)}–${r.chainRatio.max.toFixed(2)}]`,
    `  machine CPU per pod added and deleted (every process and the kernel, ${r.machineCpu.cores} cores): chain without meshwarp-cni ${r.machineCpu.chain.toFixed(1)} ms` +
      ` (caps this machine at ${r.machineCpu.chainCapPerS.toFixed(0)} pods/s), whole chain ${r.machineCpu.full.toFixed(1)} ms (${r.machineCpu.fullCapPerS.toFixed(0)} pods/s), meshwarp-cni alone ${r.machineCpu.agentOnly.toFixed(1)} ms`,
    `  meshwarp-cni alone on ${POOL} ready sandboxes: ${r.agentOnly.addRate.toFixed(1)} ADD/s, ${r.agentOnly.delRate.toFixed(1)} DEL/s, ${r.agentOnly.failures} failed, ${r.agentOnly.skippedTicks} ticks skipped, driver ${r.agentOnly.driverLagS.toFixed(1)} s behind`,
    `    ADD -> captured ${l(r.agentOnly.add)}`,
    `    DEL -> gone     ${l(r.agentOnly.del)}`,
    `    agent CPU       ${r.agentCpuMsPerPod.toFixed(2)} ms per pod (ADD + DEL)`,
    `  agent           RSS ${r.rssMB.toFixed(1)} MB at ${r.held} pods (${r.rssIdleMB.toFixed(1)} MB with none), CPU ${r.cpuPercent.toFixed(0)} % of a core during churn`,
    `                  of it ${r.heldRss.anonMB.toFixed(1)} MB anonymous, ${r.heldRss.fileMB.toFixed(1)} MB file pages (Node's binary: shared, reclaimable); peak ${r.heldRss.peakMB.toFixed(1)} MB during the run`,
    ...(r.heldMemory ? [`                  V8 heap ${r.heldMemory.heapUsedMB.toFixed(1)} MB used of ${r.heldMemory.heapTotalMB.toFixed(1)} MB, buffers ${r.heldMemory.externalMB.toFixed(1)} MB`] : []),
    `  agent capacity  ${r.agentCapacity.toFixed(0)} pods/s added and deleted (1000 / its CPU ms per pod: it serializes ADDs and DELs on one thread)`,
    '  steps (p50 / p99 ms)          alone            during churn',
    ...Object.keys({ ...r.steps.alone, ...r.steps.churn }).map((k) => {
      const f = (x: Latency | undefined) => (x ? `${x.p50.toFixed(1)} / ${x.p99.toFixed(1)}` : '-').padEnd(17);
      return `    ${k.padEnd(26)} ${f(r.steps.alone[k])}${f(r.steps.churn[k])}`;
    }),
    `  leaks           ${Object.entries(r.leaks).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    '  goals',
    ...r.goals.map((g) => `    ${g.met ? 'met    ' : 'NOT MET'} ${g.text}: ${Number.isInteger(g.value) ? g.value : g.value.toFixed(1)} (${g.op} ${g.target})`),
    ...r.errors.map((e) => `  error: ${e}`),
  ];
  return `${lines.join('\n')}\n`;
}
