// SPDX-License-Identifier: Apache-2.0
// Per-query cost of sidecar DNS capture (S6): the BPF run time of the cgroup programs per
// DNS query, captured next to uncaptured. BPF_PROG_TEST_RUN does not run cgroup sock_addr
// programs, so the programs run for real: a one-node lab (meshwarp agent, eBPF engine,
// profile istio, --cluster-dns; dnsmasq as the cluster DNS in the node's netns; a meshed
// pod whose sidecar runs the lab DNS proxy on 15053; an unmeshed pod) sends bounded bursts of
// queries, and the kernel's per-program statistics (run_time_ns, run_cnt; BPF_ENABLE_STATS,
// on only while this process holds its fd, so nothing global is left switched on) give the
// time spent in each of the node's programs during each burst.
//   sudo .tools/node/bin/node bench/dns-cost.ts [--count N (default 2000)] [--dataplane sidecar|ambient] [--json]
// --dataplane ambient: the agent runs the ambient dataplane (eBPF), the lab's node proxy runs the
// DNS proxy, and the programs measured are the tc programs on the enrolled pod's veth
// (mwam_from_pod, mwam_to_pod) and on the node proxy's interface (mwam_proxy_in).
// All traffic stays inside the lab's network namespaces.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Lab, LabAgent, LabNodeProxy, labRunDir, uniquePrefix, waitForLine, type LabNode, type LabPod, type Sandbox } from '../src/lab/index.ts';
import { tcxPrograms } from '../src/bpf/index.ts';
import { withNetns } from '../src/sys/netns.ts';
import { POD_IFNAME } from '../src/lab/wire.ts';
import { fn } from '../src/bpf/libbpf.ts';
import { BPF_STATS_RUN_TIME } from '../src/bpf/uapi.ts';
import { close } from '../src/sys/libc.ts';
import { ensureBpffs } from '../src/sys/bpffs.ts';

const { values: v } = parseArgs({ options: { count: { type: 'string', default: '2000' }, dataplane: { type: 'string', default: 'sidecar' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true });
const AMBIENT = v.dataplane === 'ambient';
if (!AMBIENT && v.dataplane !== 'sidecar') throw new Error(`--dataplane: expected sidecar or ambient, got ${v.dataplane}`);
if (v.help) {
  process.stdout.write('usage: bench/dns-cost.ts [--count N (queries per burst, default 2000)] [--dataplane sidecar|ambient] [--json]\n');
  process.exit(0);
}
const COUNT = Number(v.count);
if (!Number.isInteger(COUNT) || COUNT < 100 || COUNT > 100_000) throw new Error(`--count: expected 100-100000, got ${v.count}`);
if (process.getuid?.() !== 0) throw new Error('run as root: it builds network namespaces and loads eBPF');

const NODE = [process.execPath, '--disable-warning=ExperimentalWarning'];
const PROXY = fileURLToPath(new URL('../src/proxy/main.ts', import.meta.url));
const BURST = fileURLToPath(new URL('./dns-burst.ts', import.meta.url));
const CLUSTER_DNS = '10.96.0.53';
/** Another DNS server, not in the pod's resolv.conf: its queries are not captured. */
const OTHER_DNS = '10.96.0.54';
const APP_UID = 1000;
const PROXY_UID = 1337; // profile istio
const ENV = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };

interface ProgStat { id: number; name: string; runTimeNs: number; runCnt: number }
interface Case { id: string; what: string; pod: 'meshed' | 'unmeshed'; server: string; mode: 'sendto' | 'connected'; uid: number }
interface CaseResult extends Case { answered: number; perQueryNs: number; programs: { name: string; runs: number; ns: number; nsPerRun: number }[] }

const CASES: Case[] = [
  { id: 'captured-sendto', what: 'captured, unconnected UDP (sendto; musl)', pod: 'meshed', server: CLUSTER_DNS, mode: 'sendto', uid: APP_UID },
  { id: 'captured-connected', what: 'captured, connected UDP (connect+send; glibc)', pod: 'meshed', server: CLUSTER_DNS, mode: 'connected', uid: APP_UID },
  { id: 'not-server', what: 'uncaptured: meshed pod, server not in resolv.conf', pod: 'meshed', server: OTHER_DNS, mode: 'sendto', uid: APP_UID },
  { id: 'proxy-uid', what: 'uncaptured: meshed pod, the proxy\'s own query', pod: 'meshed', server: CLUSTER_DNS, mode: 'sendto', uid: PROXY_UID },
  { id: 'unmeshed', what: 'uncaptured: pod not meshed', pod: 'unmeshed', server: CLUSTER_DNS, mode: 'sendto', uid: APP_UID },
];
/** Ambient: no proxy uid (the node proxy's queries leave from its own interface: no program runs). */
const AMBIENT_CASES: Case[] = [
  { id: 'captured-sendto', what: 'captured, unconnected UDP (sendto; musl)', pod: 'meshed', server: CLUSTER_DNS, mode: 'sendto', uid: APP_UID },
  { id: 'captured-connected', what: 'captured, connected UDP (connect+send; glibc)', pod: 'meshed', server: CLUSTER_DNS, mode: 'connected', uid: APP_UID },
  { id: 'not-server', what: 'uncaptured: enrolled pod, server not in resolv.conf', pod: 'meshed', server: OTHER_DNS, mode: 'sendto', uid: APP_UID },
];

/** Ambient: the tcx programs on the enrolled pod's veth (node netns) and the node proxy's interface (its netns). */
function tcPrograms(node: LabNode, pod: LabPod, proxy: LabNodeProxy): ProgStat[] {
  const link = JSON.parse(execFileSync('nsenter', [`--net=${proxy.pod.netnsPath}`, '--', 'ip', '-j', 'link', 'show', 'dev', POD_IFNAME], { encoding: 'utf8' }))[0] as { ifindex: number };
  const ids = [
    ...withNetns(node.netnsPath, () => [...tcxPrograms(pod.hostIfindex, 'ingress'), ...tcxPrograms(pod.hostIfindex, 'egress')]),
    ...withNetns(proxy.pod.netnsPath, () => tcxPrograms(link.ifindex, 'ingress')),
  ];
  return ids.map((id) => {
    const p = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show', 'id', String(id)], { encoding: 'utf8' }));
    return { id, name: p.name, runTimeNs: p.run_time_ns ?? 0, runCnt: p.run_cnt ?? 0 };
  });
}

/** The programs attached to the node's cgroup, with their statistics. */
function nodePrograms(node: LabNode): ProgStat[] {
  const attached = JSON.parse(execFileSync('bpftool', ['-j', 'cgroup', 'show', node.cgroupPath], { encoding: 'utf8' })) as { id: number }[];
  return attached.map(({ id }) => {
    const p = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show', 'id', String(id)], { encoding: 'utf8' }));
    return { id, name: p.name, runTimeNs: p.run_time_ns ?? 0, runCnt: p.run_cnt ?? 0 };
  });
}

async function startDnsmasq(sb: Sandbox): Promise<void> {
  const child = sb.spawn(['dnsmasq', '-k', '-C', '/dev/null', '--no-resolv', '--no-hosts', '--no-poll', '--pid-file=', '--user=root',
    '--bind-interfaces', `--listen-address=${CLUSTER_DNS}`, `--listen-address=${OTHER_DNS}`, '--port=53',
    '--host-record=svc.mesh,192.0.2.1', '--log-facility=-'], { stdio: ['ignore', 'ignore', 'pipe'] });
  (child as { stdout: unknown }).stdout = child.stderr; // dnsmasq logs to stderr
  await waitForLine(child, /started, version/, 10_000);
}

async function burst(pod: LabPod, c: Case): Promise<number> {
  const r = await pod.run([...NODE, BURST, '--server', c.server, '--count', String(COUNT), '--mode', c.mode],
    { uid: c.uid, env: ENV, timeoutMs: 600_000 });
  if (r.code !== 0) throw new Error(`${c.id}: burst failed (exit ${r.code}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout).answered;
}

ensureBpffs();
const lab = await Lab.create({ prefix: uniquePrefix('mwq') });
let statsFd = -1;
try {
  const node = lab.addNode('node1');
  for (const a of [CLUSTER_DNS, OTHER_DNS]) await node.check(['ip', 'addr', 'add', `${a}/32`, 'dev', 'lo']);
  await startDnsmasq(node);
  const agent = new LabAgent(node, { engine: 'ebpf', profile: 'istio', args: ['--cluster-dns', CLUSTER_DNS], ...(AMBIENT ? { dataplanes: ['ambient'] } : {}) });
  await agent.start();
  lab.enableCni(node, { agentSocket: agent.socket, ...(AMBIENT ? { dataplane: 'ambient' as const } : {}) });
  let proxy: LabNodeProxy | undefined;
  if (AMBIENT) {
    proxy = await LabNodeProxy.start(node, 'ztunnel', { dns: { names: ['svc.mesh=192.0.2.2'], upstream: [CLUSTER_DNS] } });
    await proxy.announceTo(agent);
  }
  const meshed = await lab.addPodCni(node, 'client', { namespace: 'bench' });
  const unmeshed = lab.addPod(node, 'plain');
  mkdirSync(labRunDir(lab.prefix), { recursive: true });
  const resolvConf = `${labRunDir(lab.prefix)}/resolv.conf`;
  writeFileSync(resolvConf, `nameserver ${CLUSTER_DNS}\n`);
  if (!AMBIENT) {
    const sc = meshed.spawn([...NODE, PROXY, '--outbound', '15001', '--inbound', '15006', '--dns-port', '15053', '--dns-name', 'svc.mesh=192.0.2.2'],
      { uid: PROXY_UID, resolvConf });
    await waitForLine(sc, /^ready$/);
  }
  const programsNow = (): ProgStat[] => (proxy ? tcPrograms(node, meshed, proxy) : nodePrograms(node));

  statsFd = fn.enableStats(BPF_STATS_RUN_TIME) as number;
  if (statsFd < 0) throw new Error(`BPF_ENABLE_STATS failed (${statsFd})`);
  const results: CaseResult[] = [];
  for (const c of AMBIENT ? AMBIENT_CASES : CASES) {
    const pod = c.pod === 'meshed' ? meshed : unmeshed;
    // Warm-up (page cache, JIT of the client), then the measured burst.
    await burst(pod, { ...c });
    const before = new Map(programsNow().map((p) => [p.id, p]));
    const answered = await burst(pod, c);
    const programs = programsNow().map((p) => {
      const b = before.get(p.id);
      const runs = p.runCnt - (b?.runCnt ?? 0);
      const ns = p.runTimeNs - (b?.runTimeNs ?? 0);
      return { name: p.name, runs, ns, nsPerRun: runs ? ns / runs : 0 };
    }).filter((p) => p.runs > 0);
    const total = programs.reduce((s, p) => s + p.ns, 0);
    results.push({ ...c, answered, perQueryNs: total / COUNT, programs });
    if (!v.json) process.stderr.write(`${c.id}: ${answered}/${COUNT} answered\n`);
  }
  if (v.json) {
    process.stdout.write(`${JSON.stringify({ dataplane: AMBIENT ? 'ambient' : 'sidecar', count: COUNT, kernel: execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim(), results }, null, 2)}\n`);
  } else {
    process.stdout.write(`BPF run time per DNS query, ${AMBIENT ? 'ambient' : 'sidecar'} (${COUNT} queries per case, a new socket each; kernel ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()})\n`);
    for (const r of results) {
      const progs = r.programs.map((p) => `${p.name} ${p.runs}x ${p.nsPerRun.toFixed(0)} ns`).join(', ');
      process.stdout.write(`  ${r.what.padEnd(52)} ${r.perQueryNs.toFixed(0).padStart(6)} ns/query   [${progs}]\n`);
    }
  }
  await proxy?.stop();
} finally {
  if (statsFd >= 0) close(statsFd);
  await lab.destroy();
}
