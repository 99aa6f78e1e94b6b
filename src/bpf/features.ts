// SPDX-License-Identifier: Apache-2.0
// What this kernel can do, each feature probed at most once per process and
// each tagged with the upstream release that added it. The same probes serve
// the attach code (haveTcx), `meshwarp doctor` and the kernel tests' `needs`.
// Probes are read-only: a program or map is loaded and closed at once and
// nothing stays attached. They are synchronous (koffi calls), so the attach
// path can ask them without going async. Program loads retry on EAGAIN (in
// sys.ts progLoadRaw; libbpf's own probes do the same).
import { AF_INET, SOCK_STREAM, SOL_SOCKET, SO_NETNS_COOKIE, close, errno, getsockopt, socket, strerror } from '../sys/libc.ts';
import { BpfError, fn } from './libbpf.ts';
import { probeAttachType, probeHelper, probeMapType, probeProgType, type Answer } from './probe.ts';
import { tcxLinkCreate } from './sys.ts';
import { returnProgram, testRun, type RawProgram } from './testrun.ts';
import { ATTACH_TYPE, ERRNO, ETH_HLEN, FUNC, MAP_TYPE, PROG_TYPE } from './uapi.ts';

const PROGS = [
  { name: 'sched_cls', type: PROG_TYPE.SCHED_CLS, since: '4.1' },
  { name: 'sock_ops', type: PROG_TYPE.SOCK_OPS, since: '4.13' },
  { name: 'sk_skb', type: PROG_TYPE.SK_SKB, since: '4.14' },
  { name: 'sk_msg', type: PROG_TYPE.SK_MSG, since: '4.17' },
  { name: 'cgroup_sock_addr', type: PROG_TYPE.CGROUP_SOCK_ADDR, since: '4.17' },
  { name: 'cgroup_sockopt', type: PROG_TYPE.CGROUP_SOCKOPT, since: '5.3' },
  { name: 'sk_lookup', type: PROG_TYPE.SK_LOOKUP, since: '5.9' },
] as const;
type ProgName = (typeof PROGS)[number]['name'];

const MAPS = [
  { name: 'lpm_trie', type: MAP_TYPE.LPM_TRIE, since: '4.11' },
  { name: 'sockmap', type: MAP_TYPE.SOCKMAP, since: '4.14' },
  { name: 'sockhash', type: MAP_TYPE.SOCKHASH, since: '4.18' },
  { name: 'sk_storage', type: MAP_TYPE.SK_STORAGE, since: '5.2' },
  { name: 'ringbuf', type: MAP_TYPE.RINGBUF, since: '5.8' },
] as const;

/** cgroup hooks: a program of type `prog` loaded with expected_attach_type `attach`. */
const HOOKS = [
  { name: 'connect4', prog: 'cgroup_sock_addr', attach: ATTACH_TYPE.CGROUP_INET4_CONNECT, since: '4.17' },
  { name: 'connect6', prog: 'cgroup_sock_addr', attach: ATTACH_TYPE.CGROUP_INET6_CONNECT, since: '4.17' },
  { name: 'sendmsg4', prog: 'cgroup_sock_addr', attach: ATTACH_TYPE.CGROUP_UDP4_SENDMSG, since: '4.18' },
  { name: 'sendmsg6', prog: 'cgroup_sock_addr', attach: ATTACH_TYPE.CGROUP_UDP6_SENDMSG, since: '4.18' },
  { name: 'recvmsg4', prog: 'cgroup_sock_addr', attach: ATTACH_TYPE.CGROUP_UDP4_RECVMSG, since: '5.2' },
  { name: 'recvmsg6', prog: 'cgroup_sock_addr', attach: ATTACH_TYPE.CGROUP_UDP6_RECVMSG, since: '5.2' },
  { name: 'getsockopt', prog: 'cgroup_sockopt', attach: ATTACH_TYPE.CGROUP_GETSOCKOPT, since: '5.3' },
  { name: 'getpeername4', prog: 'cgroup_sock_addr', attach: ATTACH_TYPE.CGROUP_INET4_GETPEERNAME, since: '5.8' },
  { name: 'getpeername6', prog: 'cgroup_sock_addr', attach: ATTACH_TYPE.CGROUP_INET6_GETPEERNAME, since: '5.8' },
] as const satisfies readonly { name: string; prog: ProgName; attach: number; since: string }[];

/** expected_attach_type for helper probes: the kernel refuses these program types without one. */
const PROBE_ATTACH: Partial<Record<ProgName, number>> = {
  cgroup_sock_addr: ATTACH_TYPE.CGROUP_INET4_CONNECT,
  cgroup_sockopt: ATTACH_TYPE.CGROUP_GETSOCKOPT,
  sk_lookup: ATTACH_TYPE.SK_LOOKUP,
};

/**
 * Helpers by the program type that calls them. `since` is the release that
 * allows the helper in that program type. Where that release is not on
 * record it is the lower bound (the later of the helper's and the program or
 * map type's); those entries say so.
 */
const HELPERS = [
  { prog: 'cgroup_sock_addr', name: 'get_netns_cookie', since: '5.7' },
  { prog: 'cgroup_sock_addr', name: 'get_current_uid_gid', since: '4.17' },
  { prog: 'cgroup_sock_addr', name: 'get_socket_cookie', since: '4.19' },
  { prog: 'cgroup_sock_addr', name: 'sk_storage_get', since: '5.2' }, // lower bound
  { prog: 'cgroup_sock_addr', name: 'ringbuf_output', since: '5.8' },
  { prog: 'sock_ops', name: 'get_netns_cookie', since: '5.15' },
  { prog: 'sock_ops', name: 'sk_storage_get', since: '5.2' }, // lower bound
  { prog: 'sock_ops', name: 'sock_ops_cb_flags_set', since: '4.16' },
  { prog: 'sock_ops', name: 'sock_hash_update', since: '4.18' },
  { prog: 'cgroup_sockopt', name: 'get_netns_cookie', since: '5.15' },
  { prog: 'cgroup_sockopt', name: 'sk_storage_get', since: '5.3' },
  { prog: 'sk_msg', name: 'msg_redirect_hash', since: '4.18' },
  { prog: 'sk_msg', name: 'get_netns_cookie', since: '5.15' },
  { prog: 'sched_cls', name: 'redirect', since: '4.4' },
  { prog: 'sched_cls', name: 'redirect_peer', since: '5.10' },
  { prog: 'sched_cls', name: 'sk_assign', since: '5.7' },
  { prog: 'sched_cls', name: 'skc_lookup_tcp', since: '5.2' },
  { prog: 'sched_cls', name: 'sk_release', since: '4.20' },
  { prog: 'sched_cls', name: 'ringbuf_output', since: '5.8' },
] as const satisfies readonly { prog: ProgName; name: keyof typeof FUNC; since: string }[];

type HelperId<H> = H extends { prog: infer P extends string; name: infer N extends string } ? `helper.${P}.${N}` : never;

/**
 * Stable feature ids (also `meshwarp doctor`'s check ids): `prog.<type>`,
 * `map.<type>`, `attach.<cgroup hook>`, `helper.<prog type>.<helper>`, and
 * the commands and hooks named below.
 */
export type FeatureId = KernelFeatureId | `datapath.${DatapathName}`;
/** The eBPF datapaths, as features made of the kernel features they need (DATAPATHS). */
export type DatapathName = 'sidecar' | 'ambient';
type KernelFeatureId =
  | `prog.${ProgName}`
  | `map.${(typeof MAPS)[number]['name']}`
  | `attach.${(typeof HOOKS)[number]['name']}`
  | HelperId<(typeof HELPERS)[number]>
  | 'tcx'
  | 'link.update'
  | 'test_run.sched_cls'
  | 'test_run.sched_cls.ingress_ifindex'
  | 'sockopt.netns_cookie';

export interface FeatureResult {
  /** The kernel has it. */
  readonly available: boolean;
  /** One line: what the probe found, e.g. "tcx not supported by this kernel (needs ≥ 6.6)". */
  readonly reason: string;
  /** The probe could not tell (no privilege, an unexpected error): not available, yet not known to be missing. */
  readonly unknown?: true;
}

export interface Feature {
  readonly id: FeatureId;
  /** What messages call it: "tcx", "cgroup/connect6 hook", "helper bpf_sk_assign in sched_cls programs". */
  readonly name: string;
  /** The upstream release that added it. */
  readonly since: string;
  /** Runs the probe now; have() runs it once and keeps the answer. */
  probe(): FeatureResult;
}

const found = (reason: string): FeatureResult => ({ available: true, reason });
const unknown = (reason: string): FeatureResult => ({ available: false, reason, unknown: true });

/** "tcx not supported by this kernel (needs ≥ 6.6)", with the probe's evidence when it has some. */
function missingText(f: Pick<Feature, 'name' | 'since'>, evidence?: string): string {
  return `${f.name} not supported by this kernel (needs ≥ ${f.since})${evidence ? `: ${evidence}` : ''}`;
}

/** A probe's tri-state answer as a result: no → missing with the evidence, undecided → unknown. */
function fromAnswer(f: Pick<Feature, 'name' | 'since'>, a: Answer, yes: string): FeatureResult {
  if (a.supported === true) return found(yes);
  if (a.supported === false) return { available: false, reason: missingText(f, a.detail) };
  return unknown(a.detail);
}

/** libbpf's probes answer 1 (yes), 0 (no) or -errno (could not tell). */
function fromLibbpf(f: Pick<Feature, 'name' | 'since'>, ret: number): FeatureResult {
  if (ret === 1) return found('supported');
  if (ret === 0) return { available: false, reason: missingText(f) };
  return unknown(`unknown: ${strerror(-ret)} (errno ${-ret})`);
}

/** Runs `use` on a fresh `r0 = 0; exit` sched_cls program, closed afterwards. */
function withSchedCls(name: string, use: (prog: RawProgram) => FeatureResult): FeatureResult {
  let prog: RawProgram;
  try {
    prog = returnProgram(PROG_TYPE.SCHED_CLS, 0, name);
  } catch (e) {
    return unknown(`unknown: cannot load a sched_cls program: ${(e as Error).message.split('\n')[0]}`);
  }
  try { return use(prog); } finally { prog.close(); }
}

function progFeature(p: (typeof PROGS)[number]): Feature {
  const f = { id: `prog.${p.name}`, name: `BPF program type ${p.name}`, since: p.since } as const;
  return { ...f, probe: () => fromLibbpf(f, probeProgType(p.type)) };
}

function mapFeature(m: (typeof MAPS)[number]): Feature {
  const f = { id: `map.${m.name}`, name: `BPF map type ${m.name}`, since: m.since } as const;
  return { ...f, probe: () => fromLibbpf(f, probeMapType(m.type)) };
}

function hookFeature(h: (typeof HOOKS)[number]): Feature {
  const f = { id: `attach.${h.name}`, name: `cgroup/${h.name} hook`, since: h.since } as const;
  const progType = PROGS.find((p) => p.name === h.prog)!.type;
  return { ...f, probe: () => fromAnswer(f, probeAttachType(progType, h.attach), 'loads') };
}

function helperFeature(h: (typeof HELPERS)[number]): Feature {
  // The template literal type of the id is the cross product of programs and helpers: narrow it to the listed pair.
  const f = { id: `helper.${h.prog}.${h.name}` as FeatureId, name: `helper bpf_${h.name} in ${h.prog} programs`, since: h.since } as const;
  const progType = PROGS.find((p) => p.name === h.prog)!.type;
  return { ...f, probe: () => fromAnswer(f, probeHelper(progType, PROBE_ATTACH[h.prog] ?? 0, FUNC[h.name]), 'available') };
}

/**
 * tcx: a tcx link on an ifindex no interface can have. A kernel with tcx
 * accepts the attach type and then finds no device (ENODEV); an older one
 * does not know the attach type (EINVAL). Nothing is ever attached.
 */
const TCX: Feature = {
  id: 'tcx', name: 'tcx', since: '6.6',
  probe: () => withSchedCls('mw_probe_tcx', (prog) => {
    try {
      tcxLinkCreate(prog.fd, 0xffffffff, ATTACH_TYPE.TCX_INGRESS);
      return unknown('unknown: a tcx link on ifindex 0xffffffff was created');
    } catch (e) {
      if (!(e instanceof BpfError)) throw e;
      if (e.errno === ERRNO.ENODEV) return found('supported');
      if (e.errno === ERRNO.EINVAL) return { available: false, reason: missingText(TCX) };
      return unknown(`unknown: ${e.message}`);
    }
  }),
};

/** BPF_LINK_UPDATE on fd -1: a kernel that has the command looks the fd up (EBADF); an older one rejects the command (EINVAL). */
const LINK_UPDATE: Feature = {
  id: 'link.update', name: 'BPF_LINK_UPDATE', since: '5.7',
  probe: () => {
    const r = fn.linkUpdate(-1, -1, null) as number;
    if (r === -ERRNO.EBADF) return found('supported');
    if (r === -ERRNO.EINVAL) return { available: false, reason: missingText(LINK_UPDATE) };
    return unknown(`unknown: ${strerror(-r)} (errno ${-r})`);
  },
};

/** BPF_PROG_TEST_RUN of an empty sched_cls program on the smallest packet it takes. */
const TEST_RUN_SCHED_CLS: Feature = {
  id: 'test_run.sched_cls', name: 'BPF_PROG_TEST_RUN of sched_cls programs', since: '4.12',
  probe: () => withSchedCls('mw_probe_run', (prog) => {
    try {
      testRun(prog.fd, { data: Buffer.alloc(ETH_HLEN) });
      return found('runs');
    } catch (e) {
      if (!(e instanceof BpfError)) throw e;
      if (e.errno === ERRNO.EINVAL || e.errno === ERRNO.ENOTSUPP || e.errno === ERRNO.EOPNOTSUPP) {
        return { available: false, reason: missingText(TEST_RUN_SCHED_CLS, `errno ${e.errno}`) };
      }
      return unknown(`unknown: ${e.message}`);
    }
  }),
};

/**
 * A sched_cls test run whose __sk_buff context sets ingress_ifindex (the tc tests'
 * "arrived on the proxy's veth"). Older kernels accept only a zero there (EINVAL);
 * upstream "bpf testing: permit ingress_ifindex in bpf_prog_test_run_xattr" (Aug 2021):
 * 5.10 refuses it, 6.1 takes it; 5.16 is the release on record here (the safe bound).
 */
const TEST_RUN_INGRESS_IFINDEX: Feature = {
  id: 'test_run.sched_cls.ingress_ifindex', name: 'ingress_ifindex in the context of a sched_cls BPF_PROG_TEST_RUN', since: '5.16',
  probe: () => withSchedCls('mw_probe_iif', (prog) => {
    const ctx = Buffer.alloc(44); // struct __sk_buff up to ifindex
    ctx.writeUInt32LE(1, 36); // ingress_ifindex
    try {
      testRun(prog.fd, { data: Buffer.alloc(ETH_HLEN), ctx });
      return found('runs');
    } catch (e) {
      if (!(e instanceof BpfError)) throw e;
      if (e.errno === ERRNO.EINVAL) return { available: false, reason: missingText(TEST_RUN_INGRESS_IFINDEX, `errno ${e.errno}`) };
      return unknown(`unknown: ${e.message}`);
    }
  }),
};

/**
 * getsockopt(SO_NETNS_COOKIE): how the agent learns a netns's cookie (the key its eBPF
 * maps use for a pod or a node proxy). Older kernels answer ENOPROTOOPT.
 */
const SOCKOPT_NETNS_COOKIE: Feature = {
  id: 'sockopt.netns_cookie', name: 'getsockopt(SO_NETNS_COOKIE)', since: '5.14',
  probe: () => {
    const fd = socket(AF_INET, SOCK_STREAM, 0) as number;
    if (fd < 0) return unknown(`unknown: socket(): ${strerror(errno())}`);
    try {
      if ((getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, Buffer.alloc(8), [8]) as number) === 0) return found('supported');
      const e = errno();
      if (e === ERRNO.ENOPROTOOPT) return { available: false, reason: missingText(SOCKOPT_NETNS_COOKIE, strerror(e)) };
      return unknown(`unknown: ${strerror(e)} (errno ${e})`);
    } finally {
      close(fd);
    }
  },
};

/**
 * What each eBPF datapath object needs to load at all (and the agent to key
 * its pods: SO_NETNS_COOKIE). libbpf loads every
 * program of an object, and the verifier rejects a program that calls a
 * helper its type lacks, so one missing entry here rejects the whole
 * datapath (on 5.10: bpf_get_netns_cookie in sock_ops, cgroup_sockopt and
 * sk_msg, all 5.15). The drivers refuse to start on such a kernel with these
 * ids (`meshwarp doctor` shows each), and kernel tests of a datapath declare
 * `needs: ['datapath.sidecar']`. docs/kernels.md has the minimum per dataplane.
 */
const DATAPATHS = [
  { name: 'sidecar', what: 'the sidecar eBPF datapath (bpf/sidecar)', needs: [
    'prog.cgroup_sock_addr', 'attach.connect4', 'attach.connect6', 'attach.sendmsg4', 'attach.recvmsg4',
    'attach.getpeername4', 'helper.cgroup_sock_addr.get_netns_cookie', 'helper.cgroup_sock_addr.sk_storage_get',
    'prog.sock_ops', 'helper.sock_ops.get_netns_cookie', 'helper.sock_ops.sk_storage_get',
    'prog.cgroup_sockopt', 'attach.getsockopt', 'helper.cgroup_sockopt.get_netns_cookie',
    'prog.sk_msg', 'helper.sk_msg.get_netns_cookie', 'map.sk_storage', 'map.sockhash', 'map.ringbuf', 'prog.sched_cls',
    'sockopt.netns_cookie', // not a load need, a run need: the agent keys pods by the cookie it reads so (5.14)
  ] },
  { name: 'ambient', what: 'the ambient eBPF datapath (bpf/ambient)', needs: [
    'prog.sched_cls', 'helper.sched_cls.redirect', 'helper.sched_cls.sk_assign',
    'helper.sched_cls.skc_lookup_tcp', 'helper.sched_cls.sk_release', 'helper.sched_cls.ringbuf_output', 'map.ringbuf',
    'sockopt.netns_cookie', // pods and node proxies are keyed by their netns cookie (Linux 5.14)
  ] },
] as const satisfies readonly { name: DatapathName; what: string; needs: readonly KernelFeatureId[] }[];

function datapathFeature(d: (typeof DATAPATHS)[number]): Feature {
  const since = d.needs.map((id) => feature(id).since).reduce((a, b) => (kernelAtLeast(a, b) ? a : b));
  const f = { id: `datapath.${d.name}` as FeatureId, name: d.what, since } as const;
  return {
    ...f,
    probe: () => {
      const results = d.needs.map((id) => ({ id, r: have(id) }));
      const missing = results.filter((x) => !x.r.available && !x.r.unknown);
      if (missing.length) {
        return { available: false, reason: `${d.what} cannot load on this kernel (needs ≥ ${since}): missing ${missing.map((x) => x.id).join(', ')} — ${missing.map((x) => x.r.reason).join('; ')}` };
      }
      const unsure = results.filter((x) => x.r.unknown);
      if (unsure.length) return unknown(`unknown: ${unsure.map((x) => `${x.id}: ${x.r.reason}`).join('; ')}`);
      return found(`every feature it needs is there (${d.needs.length} probes)`);
    },
  };
}

/** Every feature, in the order doctor reports them. */
export const FEATURES: readonly Feature[] = [
  ...PROGS.map(progFeature),
  ...MAPS.map(mapFeature),
  ...HOOKS.map(hookFeature),
  ...HELPERS.map(helperFeature),
  TCX,
  LINK_UPDATE,
  TEST_RUN_SCHED_CLS,
  TEST_RUN_INGRESS_IFINDEX,
  SOCKOPT_NETNS_COOKIE,
];

const byId = new Map<string, Feature>(FEATURES.map((f) => [f.id, f]));
/** The datapaths as features (after FEATURES: their `since` is derived from their needs'). */
export const DATAPATH_FEATURES: readonly Feature[] = DATAPATHS.map(datapathFeature);
for (const f of DATAPATH_FEATURES) byId.set(f.id, f);

/**
 * Refuses to run the `dataplane`'s eBPF datapath on a kernel that cannot load
 * it: an UnsupportedFeatureError naming every missing probe (doctor ids) and
 * the minimum kernel. Called by the drivers before they load their object.
 */
export function requireDatapath(dataplane: DatapathName): void {
  const id = `datapath.${dataplane}` as FeatureId;
  const r = have(id);
  if (r.available || r.unknown) return; // unknown: let the load itself say what is wrong
  const e = new UnsupportedFeatureError(id);
  e.message = `${r.reason}. ${dataplane === 'sidecar' ? 'Use --engine iptables (sidecar dataplane on iptables) or --dataplanes ambient on this kernel; ' : ''}see docs/kernels.md`;
  throw e;
}

/** The feature with this id (its name and `since`); throws for an unknown id. */
export function feature(id: FeatureId): Feature {
  const f = byId.get(id);
  if (!f) throw new RangeError(`unknown feature ${id}`);
  return f;
}

export function isFeatureId(id: string): id is FeatureId {
  return byId.has(id);
}

const cache = new Map<FeatureId, FeatureResult>();

/** The feature's probe result, probed on first use and kept for the process's life. */
export function have(id: FeatureId): FeatureResult {
  let r = cache.get(id);
  if (r === undefined) {
    r = feature(id).probe();
    cache.set(id, r);
  }
  return r;
}

/** Whether tc programs can attach as tcx links (else: legacy cls_bpf). */
export function haveTcx(): FeatureResult {
  return have('tcx');
}

/** A feature this kernel lacks; the message says which release added it. */
export class UnsupportedFeatureError extends BpfError {
  override readonly code = 'ERR_BPF_NOT_SUPPORTED';
  readonly feature: FeatureId;
  readonly since: string;
  constructor(id: FeatureId, errno: number = ERRNO.EOPNOTSUPP) {
    const f = feature(id);
    super(f.name, errno);
    this.message = missingText(f);
    this.feature = id;
    this.since = f.since;
  }
}

/** [major, minor, patch] of a kernel release such as "6.18.44-fc-v669"; undefined when it does not parse. */
export function parseKernelVersion(release: string): [number, number, number] | undefined {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(release);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : undefined;
}

/** Is the kernel `release` at least `since` ("6.6")? undefined when the release does not parse. */
export function kernelAtLeast(release: string, since: string): boolean | undefined {
  const got = parseKernelVersion(release);
  const want = parseKernelVersion(since);
  if (!got || !want) return undefined;
  for (let i = 0; i < 3; i++) if (got[i] !== want[i]) return got[i] > want[i];
  return true;
}
