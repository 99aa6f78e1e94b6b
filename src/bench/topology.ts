// SPDX-License-Identifier: Apache-2.0
// The benchmark's lab: two nodes, one eBPF and one iptables driver per node
// (started once), and for every measurement block (one scenario, one round) three
// fresh pods: client `c` on node1, servers `s1` (node1) and `s2` (node2).
//
//   direct           wrk/iperf3 in c -> s1|s2 app; no sidecar anywhere
//   direct+sidecar   c's haproxy on 127.0.0.1 (explicit) -> the server pod's
//                    haproxy (explicit listener) -> the app: the same two hops
//                    as a mesh, without interception
//   iptables, ebpf   c, s1, s2 meshed (osm profile) with a transparent haproxy
//                    sidecar each; the app is addressed as in direct scenario
//   ambient/iptables c, s1, s2 enrolled in ambient mode, no sidecar: each node's
//   ambient/ebpf     node proxy (the lab's haproxy L4 relay, one per node and engine,
//                    started once) carries them — in-pod redirection (iptables in
//                    the pod netns, the proxy's listeners opened there, as Istio
//                    ships) or eBPF (bpf_sk_assign into the proxy's own netns)
//
// Fresh pods per block: the iptables driver leaves empty nat chains (and so
// conntrack) behind in a netns after unmesh, which would tax the scenarios that
// run after it. Pods of the scenarios other than ebpf run their processes in a
// cgroup outside the nodes' cgroups, so the eBPF programs attached there (for
// the whole run) never see them: those scenarios pay nothing for meshwarp.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Lab, LabNodeProxy, Sandbox, labPinRoot, runAll, uniquePrefix, type LabNode, type LabPod } from '../lab/index.ts';
import type { NodeProxy } from '../datapath/ambient/proxy.ts';
import { createDriver, labTarget, type DatapathDriver, type PodTarget } from '../datapath/index.ts';
import { resolvePodPolicy, type PodPolicy } from '../profiles/index.ts';
import { createCgroup, removeCgroupTree } from '../sys/cgroup.ts';
import { ipBatch, nsRun } from '../sys/netns.ts';
import { appServerConfig, explicitSidecarConfig, transparentSidecarConfig, type Relay } from './haproxy.ts';
import { CHILD_ENV, WRK_REPORT_LUA, httpGet, waitListening } from './tools.ts';
import { bpfRunTimes, type BpfRunTimes } from './bpfstats.ts';

export const SCENARIOS = ['direct', 'direct+sidecar', 'iptables', 'ebpf', 'ebpf+sockmap', 'ambient/iptables', 'ambient/ebpf'] as const;
export type Scenario = (typeof SCENARIOS)[number];
/** The interception engine of a sidecar scenario (ebpf+sockmap is the eBPF driver with its S4 switch on). */
export function engineOf(s: Scenario): 'ebpf' | 'iptables' | undefined {
  return s === 'ebpf' || s === 'ebpf+sockmap' ? 'ebpf' : s === 'iptables' ? 'iptables' : undefined;
}
/** The engine of an ambient scenario (undefined for the sidecar and direct ones). */
export function ambientEngineOf(s: Scenario): 'ebpf' | 'iptables' | undefined {
  return s === 'ambient/ebpf' ? 'ebpf' : s === 'ambient/iptables' ? 'iptables' : undefined;
}
export const PLACEMENTS = ['same-node', 'cross-node'] as const;
export type Placement = (typeof PLACEMENTS)[number];

/** The mesh profile of the meshed scenarios (outbound 15001, inbound 15003, proxy uid 1500). */
export const PROFILE = 'osm';
/** The app's uid (wrk, iperf3, the servers): not the proxy's. */
export const APP_UID = 1000;
export const HTTP_PORT = 8080;
export const BULK_PORT = 5201;
/** Explicit ports of direct+sidecar: client-side relays and the server sidecar's listeners. */
const EXPLICIT = {
  'same-node': { http: 15101, bulk: 15111 },
  'cross-node': { http: 15201, bulk: 15211 },
  serverHttp: 15102,
  serverBulk: 15112,
} as const;

const SHORT: Record<Scenario, string> = {
  direct: 'dir', 'direct+sidecar': 'dsc', iptables: 'ipt', ebpf: 'ebpf', 'ebpf+sockmap': 'ebsm', 'ambient/iptables': 'ami', 'ambient/ebpf': 'ame',
};

/** What an ambient driver does besides DatapathDriver: know its node's proxy. */
type AmbientDriver = DatapathDriver & { setNodeProxy(np: NodeProxy): Promise<void> };

export function parseScenarios(list: string): Scenario[] {
  const out = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const m of out) if (!(SCENARIOS as readonly string[]).includes(m)) throw new Error(`unknown scenario "${m}" (known: ${SCENARIOS.join(', ')})`);
  return SCENARIOS.filter((m) => out.includes(m));
}

export function parsePlacements(list: string): Placement[] {
  const out = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const p of out) if (!(PLACEMENTS as readonly string[]).includes(p)) throw new Error(`unknown placement "${p}" (known: ${PLACEMENTS.join(', ')})`);
  return PLACEMENTS.filter((p) => out.includes(p));
}

/** Where the client sends a placement's traffic in a block. */
export interface Target {
  url: string;
  bulk: { host: string; port: number };
}

/** The process roles of a pod, each in its own cgroup below the pod's. */
type Role = 'load' | 'sidecar' | 'app';

interface BlockPod { pod: LabPod; role(r: Role): Sandbox }

/** CPU time used so far (µs): per role of the pair measured, all lab processes, the machine. */
export interface CpuSnapshot {
  roles: { load: number; clientSidecar: number; serverSidecar: number; app: number };
  /** Every process of the lab (includes softirq work done in their context). */
  labUs: number;
  /** /proc/stat, all CPUs: busy (not idle/iowait/steal), total, and stolen by the hypervisor. */
  machine: { busyUs: number; totalUs: number; stealUs: number };
  /** Run time of meshwarp's BPF programs so far, per program. */
  bpf: BpfRunTimes;
}

/** One scenario's pods and processes, ready to measure. */
export interface Block {
  scenario: Scenario;
  /** Where wrk and iperf3 run (the client pod, in the cgroup of the scenario). */
  client: Sandbox;
  targets: Record<Placement, Target>;
  /** CPU counters for a measurement towards `placement` (take one before and after). */
  cpu(placement: Placement): CpuSnapshot;
  teardown(): Promise<void>;
}

/** usage_usec of a cgroup (0 when it is gone). */
export function cgroupUsageUs(cg: string): number {
  try {
    const m = /^usage_usec (\d+)$/m.exec(fs.readFileSync(path.join(cg, 'cpu.stat'), 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** All CPUs' busy, total and stolen time from /proc/stat (USER_HZ = 100 ticks per second). */
export function machineCpuUs(): { busyUs: number; totalUs: number; stealUs: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal = 0] = f;
  const busy = user + nice + system + irq + softirq;
  return { busyUs: busy * 10_000, totalUs: (busy + idle + iowait + steal) * 10_000, stealUs: steal * 10_000 };
}

interface Proc { child: ChildProcess; what: string; stderr: string }

/** Tools the benchmark runs; missing ones are named up front. */
const TOOLS = ['haproxy', 'wrk', 'iperf3', 'curl', 'ss', 'nsenter', 'setpriv'];

function missingTools(): string[] {
  const dirs = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':');
  return TOOLS.filter((t) => !dirs.some((d) => fs.existsSync(path.join(d, t))));
}

export class BenchLab {
  readonly lab: Lab;
  readonly policy: PodPolicy;
  /** Config files (readable by the app and proxy uids); removed by destroy() or at exit. */
  readonly dir: string;
  readonly wrkScript: string;
  readonly drivers = new Map<string, DatapathDriver>(); // `${engine}/${node}`, `ambient/${engine}/${node}`
  /** Ambient: each node's proxy per engine, `${engine}/${node}` (started once, like the drivers). */
  readonly proxies = new Map<string, LabNodeProxy>();
  #plain = 0;

  readonly #removeDir = (): void => { fs.rmSync(this.dir, { recursive: true, force: true }); };

  private constructor(lab: Lab, dir: string) {
    this.lab = lab;
    this.dir = dir;
    process.on('exit', this.#removeDir); // also after Ctrl-C (the CLI exits on signals)
    this.wrkScript = path.join(dir, 'report.lua');
    this.policy = resolvePodPolicy(PROFILE);
  }

  get prefix(): string { return this.lab.prefix; }

  /** `objectPath`: another build of sidecar.bpf.o for the ebpf scenario (default: build/bpf/sidecar.bpf.o). */
  static async create(scenarios: readonly Scenario[], prefix = uniquePrefix('mwb'), objectPath?: string): Promise<BenchLab> {
    const missing = missingTools();
    if (missing.length > 0) throw new Error(`meshwarp bench needs ${missing.join(', ')} (run \`make setup\`)`);
    const lab = await Lab.create({ prefix });
    let bl: BenchLab | undefined;
    try {
      for (const n of ['node1', 'node2']) lab.addNode(n);
      // Not under the lab's run dir: /run/meshwarp-lab is root-only (agent sockets).
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), `meshwarp-bench-${prefix}-`));
      fs.chmodSync(dir, 0o755);
      bl = new BenchLab(lab, dir);
      fs.writeFileSync(bl.wrkScript, WRK_REPORT_LUA, { mode: 0o644 });
      for (const scenario of ['ebpf', 'iptables'] as const) {
        if (!scenarios.some((x) => engineOf(x) === scenario)) continue;
        for (const node of lab.nodes.values()) {
          const d = await createDriver(scenario, {
            pinRoot: `${labPinRoot(prefix)}/${node.name}`,
            cgroupPath: node.cgroupPath,
            nodeNetnsPath: node.netnsPath,
            nodeIps: [node.addrs.gw4, node.addrs.gw6, node.ip4, node.ip6],
            ...(objectPath ? { objectPath } : {}),
            // S4 is switched per block (a flag): forced, so the ebpf+sockmap column exists
            // whatever the behaviour gate says; the report shows the gate's verdict.
            sockmap: scenarios.includes('ebpf+sockmap') ? 'force' : 'off',
          });
          bl.drivers.set(`${scenario}/${node.name}`, d);
          await d.start();
        }
      }
      for (const engine of ['ebpf', 'iptables'] as const) {
        if (!scenarios.some((x) => ambientEngineOf(x) === engine)) continue;
        for (const node of lab.nodes.values()) {
          const d = await createDriver(engine, {
            pinRoot: `${labPinRoot(prefix)}/${node.name}-ambient`,
            nodeNetnsPath: node.netnsPath,
            nodeIps: [node.addrs.gw4, node.addrs.gw6, node.ip4, node.ip6],
          }, 'ambient') as AmbientDriver;
          bl.drivers.set(`ambient/${engine}/${node.name}`, d);
          await d.start();
          // The same node proxy software and configuration for both engines; one instance each,
          // outside the node's cgroup like every non-sidecar-ebpf process (no cgroup program sees it).
          const p = await LabNodeProxy.start(node, `zt${engine === 'ebpf' ? 'e' : 'i'}`, { cgroupPath: createCgroup(`${prefix}/plain/proxy-${engine}-${node.name}`) });
          bl.proxies.set(`${engine}/${node.name}`, p);
          await d.setNodeProxy(p.announcement());
        }
      }
      return bl;
    } catch (e) {
      if (bl) await bl.destroy().catch(() => {});
      else await lab.destroy().catch(() => {});
      throw e;
    }
  }

  /** The eBPF datapath counters of both nodes, summed (empty without the ebpf scenario). */
  datapathStats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const node of this.lab.nodes.values()) {
      for (const key of [`ebpf/${node.name}`, `ambient/ebpf/${node.name}`]) {
        const d = this.drivers.get(key);
        for (const [k, v] of Object.entries(d?.features.stats?.() ?? {})) out[k] = (out[k] ?? 0) + Number(v);
      }
    }
    return out;
  }

  #driver(key: string, node: LabNode): DatapathDriver {
    const d = this.drivers.get(`${key}/${node.name}`);
    if (!d) throw new Error(`no ${key} driver on ${node.name}`);
    return d;
  }

  #proxy(engine: 'ebpf' | 'iptables', node: LabNode): LabNodeProxy {
    const p = this.proxies.get(`${engine}/${node.name}`);
    if (!p) throw new Error(`no ${engine} node proxy on ${node.name}`);
    return p;
  }

  /** Creates the pods and processes of one block and checks the traffic path. */
  async block(scenario: Scenario, round: number): Promise<Block> {
    const tag = `r${round}-${SHORT[scenario]}`;
    const n1 = this.lab.node('node1');
    const n2 = this.lab.node('node2');
    const pods: LabPod[] = [];
    const plainCgroups: string[] = [];
    const procs: Proc[] = [];
    const meshed: { driver: DatapathDriver; ref: PodTarget }[] = [];

    const teardown = async (): Promise<void> => {
      const errors: unknown[] = [];
      for (const m of meshed.splice(0)) {
        try { await m.driver.unmesh(m.ref); } catch (e) { errors.push(e); }
      }
      await Promise.all(procs.splice(0).map((p) => stop(p.child)));
      for (const cg of plainCgroups.splice(0)) {
        try { removeCgroupTree(cg); } catch (e) { errors.push(e); }
      }
      for (const p of pods.splice(0)) {
        // Sockets the killed processes left (orphans in LAST-ACK, FIN-WAIT,
        // TIME-WAIT) keep a deleted netns alive, and with it the pod's address
        // on the node bridge, where it would answer ARP for the next pod with
        // that address. Destroy them, and unplug the veth in any case.
        try { nsRun(p.netns, ['ss', '-K', '-t', '-a']); } catch { /* no INET_DIAG_DESTROY: the veth goes below */ }
        try { ipBatch(p.node.netns, [`link del ${p.hostVeth}`]); } catch (e) { errors.push(e); }
        try { this.lab.removePod(p); } catch (e) { errors.push(e); }
      }
      // The next block's pods get the same addresses with new MACs: a node
      // that still has the old neighbour entry would send them to nobody.
      for (const n of [n1, n2]) {
        try { ipBatch(n.netns, [`neigh flush dev ${n.bridge}`]); } catch (e) { errors.push(e); }
      }
      if (errors.length === 1) throw errors[0];
      if (errors.length > 1) throw new AggregateError(errors, `teardown of block ${tag} failed`);
    };

    try {
      const add = (node: LabNode, name: string): BlockPod => {
        const pod = this.lab.addPod(node, `${tag}-${name}`);
        pods.push(pod);
        let base = pod.cgroupPath;
        if (engineOf(scenario) !== 'ebpf') { // ambient too: it hooks veths, not cgroups
          base = createCgroup(`${this.prefix}/plain/${++this.#plain}`);
          plainCgroups.push(base);
        }
        // One cgroup per role, so the CPU each one uses can be read (cpu.stat).
        const roles = new Map<Role, Sandbox>();
        const role = (r: Role): Sandbox => {
          let sb = roles.get(r);
          if (!sb) {
            fs.mkdirSync(path.join(base, r), { recursive: true });
            sb = new Sandbox(this.lab, `${pod.name}/${r}`, pod.netns, path.join(base, r));
            roles.set(r, sb);
          }
          return sb;
        };
        return { pod, role };
      };
      const c = add(n1, 'c');
      const s1 = add(n1, 's1');
      const s2 = add(n2, 's2');
      const servers: Record<Placement, BlockPod> = { 'same-node': s1, 'cross-node': s2 };

      const spawn = (sb: Sandbox, what: string, argv: string[], uid: number): Proc => {
        const child = sb.spawn(argv, { uid, env: CHILD_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
        const p: Proc = { child, what: `${what} in ${sb.name}`, stderr: '' };
        child.stderr?.on('data', (b: Buffer) => { p.stderr = (p.stderr + b.toString('utf8')).slice(-2000); });
        procs.push(p);
        return p;
      };
      const haproxy = (sb: Sandbox, role: string, config: string, uid: number): Proc => {
        const file = path.join(this.dir, `${sb.name.replace(/\//g, '-')}-${role}.cfg`);
        fs.writeFileSync(file, config, { mode: 0o644 });
        return spawn(sb, `haproxy (${role})`, ['haproxy', '-db', '-f', file], uid);
      };
      const why = (ps: Proc[]) => () => {
        const dead = ps.filter((p) => p.child.exitCode !== null || p.child.signalCode !== null);
        return dead.length ? `; exited: ${dead.map((p) => `${p.what}: ${p.stderr.trim().slice(-300)}`).join('; ')}` : '';
      };

      const ready: Promise<void>[] = [];
      for (const s of [s1, s2]) {
        const ps = [
          haproxy(s.role('app'), 'app', appServerConfig(HTTP_PORT), APP_UID),
          spawn(s.role('app'), 'iperf3 -s', ['iperf3', '-s', '-p', String(BULK_PORT)], APP_UID),
        ];
        const ports: number[] = [HTTP_PORT, BULK_PORT];
        if (scenario === 'direct+sidecar') {
          ps.push(haproxy(s.role('sidecar'), 'sidecar', explicitSidecarConfig([
            { name: 'in_http', bind: `0.0.0.0:${EXPLICIT.serverHttp}`, to: `${s.pod.ip4}:${HTTP_PORT}` },
            { name: 'in_bulk', bind: `0.0.0.0:${EXPLICIT.serverBulk}`, to: `${s.pod.ip4}:${BULK_PORT}` },
          ]), this.policy.proxyUid));
          ports.push(EXPLICIT.serverHttp, EXPLICIT.serverBulk);
        } else if (engineOf(scenario)) {
          ps.push(haproxy(s.role('sidecar'), 'sidecar', transparentSidecarConfig(this.policy.outboundPort, this.policy.inboundPort), this.policy.proxyUid));
          ports.push(this.policy.outboundPort, this.policy.inboundPort);
        }
        ready.push(waitListening(s.role('app'), ports, 5000, why(ps)));
      }
      if (scenario === 'direct+sidecar') {
        const relays: Relay[] = [];
        for (const pl of PLACEMENTS) {
          const ip = servers[pl].pod.ip4;
          relays.push({ name: `${pl.replace('-', '_')}_http`, bind: `127.0.0.1:${EXPLICIT[pl].http}`, to: `${ip}:${EXPLICIT.serverHttp}` });
          relays.push({ name: `${pl.replace('-', '_')}_bulk`, bind: `127.0.0.1:${EXPLICIT[pl].bulk}`, to: `${ip}:${EXPLICIT.serverBulk}` });
        }
        const p = haproxy(c.role('sidecar'), 'sidecar', explicitSidecarConfig(relays), this.policy.proxyUid);
        ready.push(waitListening(c.role('sidecar'), relays.map((r) => Number(r.bind.split(':')[1])), 5000, why([p])));
      } else if (engineOf(scenario)) {
        const p = haproxy(c.role('sidecar'), 'sidecar', transparentSidecarConfig(this.policy.outboundPort, this.policy.inboundPort), this.policy.proxyUid);
        ready.push(waitListening(c.role('sidecar'), [this.policy.outboundPort, this.policy.inboundPort], 5000, why([p])));
      }
      await Promise.all(ready);

      const engine = engineOf(scenario);
      const ambient = ambientEngineOf(scenario);
      if (engine === 'ebpf') for (const n of [n1, n2]) this.#driver('ebpf', n).features.setSockmap?.(scenario === 'ebpf+sockmap');
      if (engine || ambient) {
        for (const p of [c, s1, s2]) {
          const driver = this.#driver(ambient ? `ambient/${ambient}` : engine!, p.pod.node);
          const ref = podRef(p.pod);
          meshed.push({ driver, ref });
          await driver.mesh(ref, this.policy);
        }
      }

      const targets = {} as Record<Placement, Target>;
      for (const pl of PLACEMENTS) {
        const ip = servers[pl].pod.ip4;
        targets[pl] = scenario === 'direct+sidecar'
          ? { url: `http://127.0.0.1:${EXPLICIT[pl].http}/`, bulk: { host: '127.0.0.1', port: EXPLICIT[pl].bulk } }
          : { url: `http://${ip}:${HTTP_PORT}/`, bulk: { host: ip, port: BULK_PORT } };
        // The path check: the app sees the client pod itself only in direct
        // scenario; through sidecars it sees its own pod's sidecar, through the in-pod
        // node proxy its own pod's address too, through the eBPF one that proxy's address.
        const want = scenario === 'direct' ? c.pod.ip4 : ambient === 'ebpf' ? this.#proxy('ebpf', servers[pl].pod.node).ip4 : ip;
        const proxied = ambient ? await this.#proxySessions(ambient) : 0;
        let seen: string;
        try {
          seen = (await httpGet(c.role('load'), `${targets[pl].url}whoami`, APP_UID)).trim();
        } catch (e) {
          throw new Error(`${scenario}, ${pl}: request through the path failed: ${(e as Error).message}${why(procs)()}`, { cause: e });
        }
        if (seen !== want) {
          throw new Error(`${scenario}, ${pl}: the app saw a request from ${seen}, expected ${want}: ` +
            `traffic did not take the ${scenario === 'direct' ? 'direct' : ambient ? 'node proxy' : 'sidecar'} path`);
        }
        // Same node: one proxy relays (outbound, then inbound in-pod); cross node: both.
        const hops = ambient ? await this.#proxySessions(ambient) - proxied : 0;
        if (ambient && hops < (ambient === 'iptables' || pl === 'cross-node' ? 2 : 1)) {
          throw new Error(`${scenario}, ${pl}: the node proxies relayed ${hops} sessions for one request`);
        }
      }
      const usage = (sb: Sandbox | undefined) => (sb ? cgroupUsageUs(sb.cgroupPath) : 0);
      // Ambient: the proxies' roles are the node proxies (the server's one only when it is another).
      const proxyUs = (node: LabNode) => (ambient ? cgroupUsageUs(this.#proxy(ambient, node).proc.cgroupPath) : 0);
      const cpu = (pl: Placement): CpuSnapshot => ({
        roles: {
          load: usage(c.role('load')),
          clientSidecar: scenario === 'direct' ? 0 : ambient ? proxyUs(n1) : usage(c.role('sidecar')),
          serverSidecar: scenario === 'direct' ? 0 : ambient ? (pl === 'cross-node' ? proxyUs(n2) : 0) : usage(servers[pl].role('sidecar')),
          app: usage(servers[pl].role('app')),
        },
        labUs: cgroupUsageUs(this.lab.cgroupPath),
        machine: machineCpuUs(),
        bpf: bpfRunTimes(),
      });
      return { scenario, client: c.role('load'), targets, cpu, teardown };
    } catch (e) {
      await teardown().catch(() => {});
      throw e;
    }
  }

  /** Sessions the node proxies of an ambient engine have accepted so far, both nodes. */
  async #proxySessions(engine: 'ebpf' | 'iptables'): Promise<number> {
    let n = 0;
    for (const node of this.lab.nodes.values()) n += await this.#proxy(engine, node).sessions();
    return n;
  }

  /** Stops the node proxies and drivers, destroys the lab (pods, processes, pins, config files). */
  async destroy(): Promise<void> {
    const drivers = [...this.drivers.values()];
    const proxies = [...this.proxies.values()];
    this.drivers.clear();
    this.proxies.clear();
    try {
      await runAll(`bench lab ${this.prefix}: teardown`, [
        ...proxies.map((p) => async () => { await p.stop(); removeCgroupTree(p.proc.cgroupPath); }),
        ...drivers.map((d) => () => d.stop()), () => this.lab.destroy(), this.#removeDir]);
    } finally {
      process.off('exit', this.#removeDir);
    }
  }
}

function podRef(pod: LabPod): PodTarget {
  return labTarget(`${pod.node.name}.${pod.name}`, pod.netnsPath, [pod.ip4, pod.ip6], { name: pod.hostVeth, ifindex: pod.hostIfindex });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
}
