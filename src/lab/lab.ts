// SPDX-License-Identifier: Apache-2.0
// Kubernetes-like nodes and pods out of network namespaces and cgroups on one machine.
//   netns  ${prefix}-fabric          transit bridge joining the nodes
//   netns  ${prefix}-${node}         pod bridge (gateway), node IP on eth0, forwarding on
//   netns  ${prefix}-${node}-${pod}  eth0 with the pod's IPv4 + IPv6
//   cgroup ${cgroup2}/${prefix}/${node}/${pod}   (the lab root is where BPF programs attach)
//          or, with `kubelet`, ${cgroup2}/${prefix}/${node}/kubepods/pod${uid}/${sandboxId}
//          (kubelet's cgroupfs layout: a pod's processes carry its uid), with a pause process
import type { ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { CommandError } from '../sys/exec.ts';
import { cgroup2Mount, createCgroup, removeCgroupTree } from '../sys/cgroup.ts';
import { deleteNetns, netnsPath, withNetns } from '../sys/netns.ts';
import { ifNameToIndex } from '../sys/libc.ts';
import {
  FIRST_POD_HOST, LAST_POD_HOST, MAX_NODES, NAME_RE, hostVethName, nodeAddrs, podAddrs, type NodeAddrs,
} from './addr.ts';
import { checkPrefix, cleanupPrefix, labNetns, labRunDir, removeLabDirs, trackLab, untrackLab } from './cleanup.ts';
import {
  CNI_FIRST_HOST, DEBIAN_CNI_DIR, LOOPBACK_CONFLIST, installNodeCni, loadConflist, nodeCniDirs, podNetworkFromResult, runChain,
  type ChainContext, type CniCommand, type CniResult, type NodeCniDirs, type PodCniAttachment,
} from './cni.ts';
import { collect, spawnIn, type RunOptions, type RunResult, type SpawnOptions } from './proc.ts';
import {
  NODE_BRIDGE, addPeerRoutes, createFabric, createNodeNetwork, createSandboxNetns, wirePodDirect, type PodNetwork,
} from './wire.ts';

/** A short random lab prefix (≤ 6 chars): `tag` + random hex. */
export function uniquePrefix(tag = 'mw'): string {
  if (!/^[a-z][a-z0-9]{0,2}$/.test(tag)) throw new Error(`prefix tag ${JSON.stringify(tag)} must be 1-3 lowercase chars`);
  return tag + randomBytes(3).toString('hex').slice(0, 6 - tag.length);
}

/** A netns + cgroup that can run processes: the common part of nodes and pods. */
export class Sandbox {
  readonly lab: Lab;
  readonly name: string;
  /** Netns name (under /run/netns) and its path. */
  readonly netns: string;
  readonly netnsPath: string;
  /** Absolute cgroup directory the sandbox's processes run in. */
  readonly cgroupPath: string;

  constructor(lab: Lab, name: string, netns: string, cgroupPath: string) {
    this.lab = lab;
    this.name = name;
    this.netns = netns;
    this.netnsPath = netnsPath(netns);
    this.cgroupPath = cgroupPath;
  }

  /** Starts a process in this sandbox; it is killed when the lab is destroyed. */
  spawn(argv: string[], opts: SpawnOptions = {}): ChildProcess {
    return this.lab.track(spawnIn(this, argv, opts));
  }

  /** Runs a command to completion; resolves with its exit code and output (never rejects on exit code). */
  run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    return collect(this.spawn(argv, opts), opts);
  }

  /** Like run(), but rejects with CommandError unless the command exits 0; resolves with stdout. */
  async check(argv: string[], opts: RunOptions = {}): Promise<string> {
    const r = await this.run(argv, opts);
    if (r.code !== 0) throw new CommandError(argv, r.code, r.stderr || (r.timedOut ? 'timed out' : String(r.signal)));
    return r.stdout;
  }
}

export class LabNode extends Sandbox {
  /** 1-based; picks the node's pod CIDRs (10.244.<index>.0/24, fd00:244:<index>::/64). */
  readonly index: number;
  readonly addrs: NodeAddrs;
  readonly bridge = NODE_BRIDGE;
  readonly pods = new Map<string, LabPod>();
  /** Set by lab.enableCni(): pods can then be created through the node's CNI chain. */
  cni: NodeCni | undefined;
  private readonly usedHosts = new Set<number>();

  constructor(lab: Lab, name: string, index: number) {
    super(lab, name, `${lab.prefix}-${name}`, `${lab.cgroupPath}/${name}`);
    this.index = index;
    this.addrs = nodeAddrs(index);
  }

  /** Node IP (transit network); kubelet-like traffic to pods is sourced from this netns. */
  get ip4(): string { return this.addrs.ip4; }
  get ip6(): string { return this.addrs.ip6; }

  /** Lowest free pod host number of this node's CIDR (below host-local's range once CNI is on). */
  allocHost(): number {
    const last = this.cni ? CNI_FIRST_HOST - 1 : LAST_POD_HOST;
    for (let h = FIRST_POD_HOST; h <= last; h++) {
      if (!this.usedHosts.has(h)) {
        this.usedHosts.add(h);
        return h;
      }
    }
    throw new Error(`node ${this.name}: pod CIDR ${this.addrs.podCidr4} is full`);
  }

  releaseHost(h: number): void {
    this.usedHosts.delete(h);
  }

  /** Highest host number taken by direct wiring (0 when none). */
  get highestHost(): number {
    return Math.max(0, ...this.usedHosts);
  }
}

/** A node's CNI setup (lab.enableCni). */
export interface NodeCni extends NodeCniDirs {
  /** CNI_PATH the runtime passes: our bin dir, then Debian's plugins. */
  cniPath: string[];
  onLog?: CniLogFn;
  onStep?: CniStepFn;
}

/** Receives each plugin's stderr lines (meshwarp-cni writes JSON lines there). */
export type CniLogFn = (line: string, plugin: string, command: CniCommand) => void;

/**
 * Receives the wall time of each step of addPodCni / removePodCni: "sandbox" (netns + cgroup),
 * "<ADD|DEL> <plugin>" per plugin process, "teardown" (netns + cgroup removed).
 */
export type CniStepFn = (step: string, ms: number) => void;

export class LabPod extends Sandbox {
  readonly node: LabNode;
  /** Lab-wide sequence number (never reused), used for the host veth name. */
  readonly seq: number;
  private net: PodNetwork | undefined;
  /** Host number allocated by direct wiring (released on removal). */
  host: number | undefined;
  /** Set for pods created by lab.addPodCni(): what DEL needs. */
  cni: PodCniAttachment | undefined;
  /** The cgroup removed with the pod (the pod-level one in the kubelet layout, above cgroupPath). */
  readonly cgroupRoot: string;

  constructor(lab: Lab, node: LabNode, name: string, seq: number, kubelet?: KubeletCgroup) {
    const podDir = kubelet && `${node.cgroupPath}/kubepods/pod${kubelet.uid}`;
    super(lab, name, `${lab.prefix}-${node.name}-${name}`, podDir ? `${podDir}/${kubelet.sandboxId}` : `${node.cgroupPath}/${name}`);
    this.node = node;
    this.seq = seq;
    this.cgroupRoot = podDir ?? this.cgroupPath;
  }

  get wired(): boolean { return this.net !== undefined; }

  /** Records the pod's network once wired (by wirePodDirect or, later, by a CNI result). */
  setNetwork(net: PodNetwork): void {
    this.net = net;
  }

  get network(): PodNetwork {
    if (this.net === undefined) throw new Error(`pod ${this.node.name}/${this.name} is not wired yet`);
    return this.net;
  }

  get ip4(): string { return this.network.ip4; }
  get ip6(): string { return this.network.ip6; }
  get hostVeth(): string { return this.network.hostVeth; }
  get hostIfindex(): number { return this.network.hostIfindex; }
}

export interface LabOptions {
  /** Default: uniquePrefix(). */
  prefix?: string;
}

export interface AddPodOptions {
  /** false: only netns (DAD off, lo up) and cgroup, for a CNI plugin to wire later. Default true. */
  wire?: boolean;
  /** Place the pod in kubelet's cgroup layout (see the header) and start its pause process. */
  kubelet?: KubeletCgroup;
}

/** A pod as kubelet lays out its cgroup: kubepods/pod<uid>/<sandbox id>. */
export interface KubeletCgroup { uid: string; sandboxId: string }

export interface EnableCniOptions {
  /** The node agent's socket (LabAgent.socket); nothing needs to listen there yet. */
  agentSocket: string;
  failurePolicy?: 'closed' | 'open';
  /** Default: the plugin's (kube-system). */
  excludeNamespaces?: string[];
  timeoutMs?: number;
  /** meshwarp.dataplane of the node's conf (ambient: its pods join the ambient dataplane). */
  dataplane?: 'sidecar' | 'ambient';
  onLog?: CniLogFn;
  onStep?: CniStepFn;
}

export interface AddPodCniOptions {
  /** Kubernetes namespace (K8S_POD_NAMESPACE). Default "default". */
  namespace?: string;
  /** Kubernetes pod uid (K8S_POD_UID), e.g. of a Pod object made in a test API server. Default random. */
  uid?: string;
  /** kubelet's cgroup layout (kubepods/pod<uid>/<container id>) and a pause process, as on a real node. */
  kubeletCgroup?: boolean;
}

export class Lab {
  readonly prefix: string;
  /** The lab's root cgroup: attach the lab's BPF programs here. */
  readonly cgroupPath: string;
  readonly fabricNetns: string;
  readonly nodes = new Map<string, LabNode>();
  private readonly children = new Set<ChildProcess>();
  private readonly netnsNames = new Set<string>();
  private podSeq = 0;
  private fabricReady = false;
  private dead = false;

  private constructor(prefix: string) {
    this.prefix = prefix;
    this.cgroupPath = `${cgroup2Mount()}/${prefix}`;
    this.fabricNetns = `${prefix}-fabric`;
  }

  /** Creates an empty lab, first removing leftovers of an earlier run with the same prefix. */
  static async create(opts: LabOptions = {}): Promise<Lab> {
    const prefix = opts.prefix ?? uniquePrefix();
    checkPrefix(prefix);
    cleanupPrefix(prefix);
    const lab = new Lab(prefix);
    createCgroup(prefix);
    trackLab(lab);
    return lab;
  }

  /** Removes the netns and cgroups of a crashed earlier lab with this prefix. */
  static cleanupPrefix(prefix: string): void {
    cleanupPrefix(prefix);
  }

  get destroyed(): boolean { return this.dead; }

  /** All pods of all nodes. */
  get pods(): LabPod[] {
    return [...this.nodes.values()].flatMap((n) => [...n.pods.values()]);
  }

  node(name: string): LabNode {
    const n = this.nodes.get(name);
    if (n === undefined) throw new Error(`lab ${this.prefix}: no node ${name}`);
    return n;
  }

  pod(nodeName: string, podName: string): LabPod {
    const p = this.node(nodeName).pods.get(podName);
    if (p === undefined) throw new Error(`lab ${this.prefix}: no pod ${nodeName}/${podName}`);
    return p;
  }

  private alive(): void {
    if (this.dead) throw new Error(`lab ${this.prefix} is destroyed`);
  }

  private claimNetns(name: string): void {
    if (this.netnsNames.has(name) || name === this.fabricNetns) throw new Error(`lab ${this.prefix}: netns name ${name} already in use`);
    this.netnsNames.add(name);
  }

  addNode(name: string): LabNode {
    this.alive();
    if (!NAME_RE.test(name)) throw new Error(`node name ${JSON.stringify(name)} must match ${NAME_RE}`);
    if (this.nodes.has(name)) throw new Error(`lab ${this.prefix}: node ${name} exists`);
    let index = 1;
    const used = new Set([...this.nodes.values()].map((n) => n.index));
    while (used.has(index)) index++;
    if (index > MAX_NODES) throw new Error(`lab ${this.prefix}: at most ${MAX_NODES} nodes`);
    const node = new LabNode(this, name, index);
    this.claimNetns(node.netns);
    if (!this.fabricReady) {
      createFabric(this.fabricNetns);
      this.fabricReady = true;
    }
    createCgroup(`${this.prefix}/${name}`);
    const peers = [...this.nodes.values()];
    createNodeNetwork(this.fabricNetns, node.netns, index, peers.map((p) => p.index));
    for (const p of peers) addPeerRoutes(p.netns, index);
    this.nodes.set(name, node);
    return node;
  }

  /** Creates a pod sandbox (netns + cgroup) and, unless opts.wire is false, wires it to the node's bridge. */
  addPod(node: LabNode | string, name: string, opts: AddPodOptions = {}): LabPod {
    this.alive();
    const n = typeof node === 'string' ? this.node(node) : node;
    if (n.lab !== this || this.nodes.get(n.name) !== n) throw new Error(`node ${n.name} is not part of lab ${this.prefix}`);
    if (!NAME_RE.test(name)) throw new Error(`pod name ${JSON.stringify(name)} must match ${NAME_RE}`);
    if (n.pods.has(name)) throw new Error(`lab ${this.prefix}: pod ${n.name}/${name} exists`);
    const pod = new LabPod(this, n, name, ++this.podSeq, opts.kubelet);
    this.claimNetns(pod.netns);
    n.pods.set(name, pod);
    try {
      createCgroup(pod.cgroupPath.slice(cgroup2Mount().length));
      createSandboxNetns(pod.netns);
      // The sandbox's pause process: the pod's oldest process, in its netns (what finds a pod by uid).
      if (opts.kubelet) pod.spawn(['sleep', 'infinity'], { stdio: 'ignore' });
      if (opts.wire !== false) this.wirePod(pod);
    } catch (e) {
      this.removePod(pod);
      throw e;
    }
    return pod;
  }

  /** Direct wiring of an unwired pod: veth to the node bridge, next free IPv4 + IPv6. */
  wirePod(pod: LabPod): void {
    this.alive();
    if (pod.wired) throw new Error(`pod ${pod.node.name}/${pod.name} is already wired`);
    const host = pod.node.allocHost();
    pod.host = host;
    const net = wirePodDirect(pod.node.netns, pod.node.index, pod.netns,
      hostVethName(this.prefix, pod.seq), podAddrs(pod.node.index, host));
    pod.setNetwork(net);
  }

  /**
   * Makes `node` create pods through the real CNI chain: writes the node's conflist
   * (bridge on the node's pod bridge + host-local for its v4 and v6 pod CIDRs, from .100 / ::100
   * so directly wired pods never collide) and runs installCni on it, which appends
   * meshwarp-cni. Everything lives in `${labRunDir}/${node}/cni`. Call again to change settings.
   */
  enableCni(node: LabNode, opts: EnableCniOptions): void {
    this.alive();
    this.ownNode(node);
    if (node.highestHost >= CNI_FIRST_HOST) throw new Error(`node ${node.name}: directly wired pods use host-local's range (.${CNI_FIRST_HOST}+)`);
    const dirs = nodeCniDirs(labRunDir(this.prefix), node.name);
    installNodeCni(dirs, node.addrs, node.bridge, opts);
    node.cni = { ...dirs, cniPath: [dirs.binDir, DEBIAN_CNI_DIR], onLog: opts.onLog, onStep: opts.onStep };
  }

  private chainContext(node: LabNode, cni: NodeCni): ChainContext {
    return {
      netnsPath: node.netnsPath,
      cniPath: cni.cniPath,
      track: (c) => { this.track(c); },
      onStderr: cni.onLog && ((plugin, cmd, text) => {
        for (const l of text.split('\n')) if (l) cni.onLog!(l, plugin, cmd);
      }),
      onPluginTime: cni.onStep && ((plugin, cmd, ms) => cni.onStep!(`${cmd} ${plugin}`, ms)),
    };
  }

  /**
   * Creates a pod as kubelet + containerd would: sandbox netns + cgroup, then from inside the
   * node netns the loopback plugin for `lo` and the node's conflist (bridge, host-local,
   * meshwarp-cni) for eth0. The pod's addresses and host veth come from the final result.
   * On failure the network is torn down with DEL (as a runtime does), the sandbox removed,
   * and the CniChainError of the failing plugin thrown.
   */
  async addPodCni(node: LabNode | string, name: string, opts: AddPodCniOptions = {}): Promise<LabPod> {
    const n = typeof node === 'string' ? this.node(node) : node;
    const cni = n.cni;
    if (!cni) throw new Error(`node ${n.name}: CNI is not enabled (lab.enableCni)`);
    const namespace = opts.namespace ?? 'default';
    if (!NAME_RE.test(namespace)) throw new Error(`namespace ${JSON.stringify(namespace)} must match ${NAME_RE}`);
    const conflist = loadConflist(cni.confDir); // read at every ADD, as runtimes pick up config changes
    const containerId = `${this.prefix}${this.podSeq + 1}${randomBytes(8).toString('hex')}`; // addPod takes seq podSeq + 1
    const uid = opts.uid ?? randomUUID();
    const t0 = performance.now();
    const pod = this.addPod(n, name, { wire: false, ...(opts.kubeletCgroup ? { kubelet: { uid, sandboxId: containerId } } : {}) });
    cni.onStep?.('sandbox', performance.now() - t0);
    const env = {
      CNI_CONTAINERID: containerId, CNI_NETNS: pod.netnsPath, CNI_IFNAME: 'eth0',
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${namespace};K8S_POD_NAME=${name};K8S_POD_INFRA_CONTAINER_ID=${containerId};K8S_POD_UID=${uid}`,
    };
    const ctx = this.chainContext(n, cni);
    let result: CniResult | undefined;
    try {
      await runChain(ctx, LOOPBACK_CONFLIST, 'ADD', { ...env, CNI_IFNAME: 'lo' });
      result = await runChain(ctx, conflist, 'ADD', env);
      pod.setNetwork(podNetworkFromResult(result!, n.bridge, n.addrs, (ifname) => withNetns(n.netnsPath, () => ifNameToIndex(ifname))));
      pod.cni = { containerId, namespace, env, conflist, result: result! };
    } catch (e) {
      if (!this.dead) {
        await runChain(ctx, conflist, 'DEL', env, { prevResult: result, keepGoing: true }).catch(() => {});
        await runChain(ctx, LOOPBACK_CONFLIST, 'DEL', { ...env, CNI_IFNAME: 'lo' }).catch(() => {});
        this.removePod(pod);
      }
      throw e;
    }
    return pod;
  }

  /**
   * DEL through the chain (reverse order) with the ADD-time config and result, then removes
   * the pod's netns and cgroup. Idempotent. If a plugin fails, the pod is kept (a runtime
   * retries) and the CniChainError is thrown.
   */
  async removePodCni(pod: LabPod): Promise<void> {
    if (pod.lab !== this) throw new Error(`pod ${pod.name} is not part of lab ${this.prefix}`);
    if (this.dead || pod.node.pods.get(pod.name) !== pod) return;
    const a = pod.cni;
    const cni = pod.node.cni;
    if (a && cni) {
      const ctx = this.chainContext(pod.node, cni);
      await runChain(ctx, a.conflist, 'DEL', a.env, { prevResult: a.result, keepGoing: true });
      await runChain(ctx, LOOPBACK_CONFLIST, 'DEL', { ...a.env, CNI_IFNAME: 'lo' });
    }
    const t0 = performance.now();
    if (pod.node.pods.get(pod.name) === pod) this.removePod(pod);
    cni?.onStep?.('teardown', performance.now() - t0);
  }

  private ownNode(n: LabNode): void {
    if (n.lab !== this || this.nodes.get(n.name) !== n) throw new Error(`node ${n.name} is not part of lab ${this.prefix}`);
  }

  /** Deletes one pod: kills its processes, deletes its netns (and so its veth) and cgroup. */
  removePod(pod: LabPod): void {
    if (pod.lab !== this) throw new Error(`pod ${pod.name} is not part of lab ${this.prefix}`);
    removeCgroupTree(pod.cgroupRoot);
    const left = deleteNetns(pod.netns);
    if (left.length > 0) throw new Error(`could not delete netns ${pod.netns}`);
    if (pod.host !== undefined) pod.node.releaseHost(pod.host);
    pod.node.pods.delete(pod.name);
    this.netnsNames.delete(pod.netns);
  }

  /** @internal Remembers a child so destroy() kills it. */
  track(child: ChildProcess): ChildProcess {
    if (this.dead) {
      child.kill('SIGKILL');
      throw new Error(`lab ${this.prefix} is destroyed`);
    }
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Kills every process of the lab, deletes all its netns and its cgroup tree. Idempotent. */
  destroySync(): void {
    this.dead = true;
    for (const c of this.children) {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
    this.children.clear();
    const errors: unknown[] = [];
    try {
      removeCgroupTree(this.cgroupPath);
    } catch (e) {
      errors.push(e);
    }
    // Every `${prefix}-` netns, including any a failed add left half-made.
    const left = deleteNetns(...new Set([...labNetns(this.prefix), ...this.netnsNames, this.fabricNetns]));
    if (left.length > 0) errors.push(new Error(`could not delete netns: ${left.join(' ')}`));
    errors.push(...removeLabDirs(this.prefix));
    this.nodes.clear();
    this.netnsNames.clear();
    untrackLab(this);
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `destroy of lab ${this.prefix} failed`);
  }

  async destroy(): Promise<void> {
    this.destroySync();
  }
}
