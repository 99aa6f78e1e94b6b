// SPDX-License-Identifier: Apache-2.0
// `meshwarp demo`: the seed's two-node demo in the lab, for real.
//
//   node1: curl, pipy-ok-v1          node2: pipy-ok-v2
//   every pod created through the CNI chain (bridge + host-local + meshwarp-cni),
//   one meshwarp agent per node (in the node's netns, like a DaemonSet),
//   a sidecar in every pod (our transparent proxy, as the profile's uid).
//
// The name pipy-ok resolves through DNS: the pods' resolv.conf (as kubelet
// writes one) names the cluster DNS, dnsmasq on a service address in each
// node's netns (as node-local-dns runs), and the agents know it
// (--cluster-dns). With a profile that has a DNS proxy (istio: 15053) the
// query is captured to the curl pod's sidecar, which answers the mesh name
// itself; otherwise dnsmasq answers, as CoreDNS would. Either way pipy-ok is a
// service address that exists nowhere on the wire: the client's connect() to
// it is captured to its sidecar, which balances between the two endpoints
// (round robin, as a mesh sidecar balances a Service). v1 is on the same node:
// the sidecar's connect goes straight to v1's inbound port. v2 is on the other
// node: tc on node2 DNATs the SYN to v2's inbound port.
import { mkdirSync, writeFileSync } from 'node:fs';
import { Lab, LabAgent, eventually, uniquePrefix, waitForLine, labRunDir, type LabNode, type LabPod } from '../lab/index.ts';
import { getProfile } from '../profiles/index.ts';
import { agentStream } from '../agent/client.ts';
import { formatTrace, type TraceRecord } from '../datapath/sidecar/trace.ts';
import type { Engine } from '../datapath/driver.ts';
import { fromRoot } from '../paths.ts';

const PROXY = fromRoot('src/proxy/main.ts');
const NODE = process.execPath;
export const SERVICE_IP = '10.96.0.10';
export const SERVICE = 'pipy-ok';
export const NAMESPACE = 'ebpf';
/** The cluster DNS (kubelet's --cluster-dns), a service address on every node. */
export const CLUSTER_DNS = '10.96.0.53';
export const SERVICE_FQDN = `${SERVICE}.${NAMESPACE}.svc.cluster.local`;
const APP_UID = 1000;

export interface DemoOptions {
  engine: Engine;
  profile: string;
  requests: number;
  /** Leave the lab up until SIGINT/SIGTERM (after onResult), for exploring. */
  keep: boolean;
  /** Progress and results for people; silent with --json. */
  say: (line: string) => void;
  /** Called with the result as soon as it is known (before waiting with keep). */
  onResult?: (r: DemoResult) => void;
}

export interface DemoRequest { n: number; ok: boolean; answer: string; endpoint?: string; resolvedBySidecar: boolean }
export interface DemoResult {
  engine: Engine;
  profile: string;
  prefix: string;
  pods: { name: string; node: string; ip4: string; ip6: string }[];
  requests: DemoRequest[];
  /** Requests the client's sidecar saw (i.e. captured). */
  captured: number;
  /** What the datapath did for the first request (eBPF engine). */
  trace: (TraceRecord & { node: string })[];
  /** What the sidecars logged for the first request. */
  sidecars: { pod: string; dir: string; origDst: string; upstream: string }[];
  /** DNS queries the sidecars' DNS proxies handled for request 1 (answer: local | upstream). */
  dns: { pod: string; proto: string; name: string; type: number; answer: string }[];
  /** Requests whose name the client's sidecar answered (its DNS proxy, captured). */
  resolvedBySidecar: number;
  /** Queries for the service name that reached the cluster DNS itself. */
  clusterDnsQueries: number;
  kept?: { prefix: string; hints: string[] };
  ok: boolean;
}

interface SidecarLog { tag: string; dir: string; origDst: string; upstream: string; client: string; proto: string; name: string; type: number; answer: string }

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const profile = getProfile(o.profile);
  const lab = await Lab.create({ prefix: uniquePrefix('dm') });
  try {
    o.say(`lab ${lab.prefix}: 2 nodes, engine ${o.engine}, profile ${profile.name} (sidecar uid ${profile.proxyUid}, outbound ${profile.outboundPort}, inbound ${profile.inboundPort})`);
    const nodes = [lab.addNode('node1'), lab.addNode('node2')];
    const agents = new Map<LabNode, LabAgent>();
    const dnsLog: string[] = [];
    for (const node of nodes) await startClusterDns(node, dnsLog);
    for (const node of nodes) {
      const agent = new LabAgent(node, { engine: o.engine, profile: profile.name, args: ['--cluster-dns', CLUSTER_DNS] });
      await agent.start();
      agents.set(node, agent);
      lab.enableCni(node, { agentSocket: agent.socket });
    }
    o.say(`cluster DNS: dnsmasq on ${CLUSTER_DNS} in each node (knows ${SERVICE_FQDN}); agents up on node1 and node2 (--cluster-dns ${CLUSTER_DNS}); CNI chain: bridge + host-local + meshwarp-cni`);

    const [n1, n2] = nodes;
    const curl = await lab.addPodCni(n1, 'curl', { namespace: NAMESPACE });
    const v1 = await lab.addPodCni(n1, 'pipy-ok-v1', { namespace: NAMESPACE });
    const v2 = await lab.addPodCni(n2, 'pipy-ok-v2', { namespace: NAMESPACE });
    const pods = [curl, v1, v2];
    for (const p of pods) o.say(`  pod ${NAMESPACE}/${p.name.padEnd(10)} on ${p.node.name}  ${p.ip4}  ${p.ip6}`);

    // Sidecars (profile uid) and apps (ordinary uid).
    const logs: SidecarLog[] = [];
    mkdirSync(labRunDir(lab.prefix), { recursive: true });
    const resolvConf = `${labRunDir(lab.prefix)}/resolv.conf`;
    writeFileSync(resolvConf, `search ${NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local\nnameserver ${CLUSTER_DNS}\noptions ndots:5\n`);
    const dnsArgs = profile.dnsPort ? ['--dns-port', String(profile.dnsPort), '--dns-name', `${SERVICE_FQDN}=${SERVICE_IP}`] : [];
    // v2 first: request 1 (the traced one) crosses nodes and shows tc at work.
    const service = `${SERVICE_IP}:8080=${v2.ip4}:8080,${v1.ip4}:8080`;
    for (const p of pods) {
      const args = [NODE, '--disable-warning=ExperimentalWarning', PROXY, '--outbound', String(profile.outboundPort),
        '--inbound', String(profile.inboundPort), '--log', '--tag', p.name, ...dnsArgs, ...(p === curl ? ['--service', service] : [])];
      const sc = p.spawn(args, { uid: profile.proxyUid, resolvConf });
      sc.stderr!.setEncoding('utf8');
      sc.stderr!.on('data', (d: string) => {
        for (const l of d.split('\n')) if (l.startsWith('{')) logs.push(JSON.parse(l));
      });
      await waitForLine(sc, /^ready$/);
    }
    for (const [p, v] of [[v1, 'v1'], [v2, 'v2']] as const) {
      const app = p.spawn([NODE, '-e', `require('http').createServer((q,r)=>r.end('Hi, I am pipy ok ${v} !\\n')).listen(8080,'::')`], { uid: APP_UID });
      await waitForListening(p, 8080);
      void app;
    }
    o.say(`service ${SERVICE}:8080 -> ${SERVICE_IP}:8080 (endpoints ${v2.ip4}:8080 on node2, ${v1.ip4}:8080 on node1)`);
    o.say(profile.dnsPort
      ? `  the name: the pod's resolv.conf names ${CLUSTER_DNS}; the query is captured to the sidecar's DNS proxy (:${profile.dnsPort}), which answers ${SERVICE_FQDN} with ${SERVICE_IP};`
      : `  the name: the pod's resolv.conf names ${CLUSTER_DNS}, which answers ${SERVICE_FQDN} with ${SERVICE_IP} (profile ${profile.name} has no DNS proxy);`);
    o.say(`  no such address exists on the wire: curl's connect() is captured to its sidecar, which balances`);
    o.say('  between the endpoints in turn, as a mesh sidecar balances a Service');

    // Trace the first request on both nodes.
    const trace: (TraceRecord & { node: string })[] = [];
    const streams = o.engine === 'ebpf'
      ? await Promise.all(nodes.map((n) => agentStream('/v1/trace', (r) => trace.push({ ...(r as TraceRecord), node: n.name }), agents.get(n)!.socket)))
      : [];
    await new Promise((r) => setTimeout(r, 100));

    o.say('');
    const requests: DemoRequest[] = [];
    let firstLogs = 0;
    for (let n = 1; n <= o.requests; n++) {
      const before = logs.length;
      const r = await curl.run(['curl', '-s', '-m', '5', `${SERVICE}:8080`], { uid: APP_UID, resolvConf, timeoutMs: 10_000 });
      const answer = r.stdout.trim();
      // Sidecar log lines follow the close: the client's outbound line, and for request 1 (the
      // one whose lines are shown) the server's inbound one. Polled, bounded: slow kernels lag.
      await eventually(() => logs.slice(before).some((l) => l.tag === 'curl' && l.dir === 'outbound')
        && (n !== 1 || logs.slice(before).some((l) => l.dir === 'inbound')), 2000, 10);
      const mine = logs.slice(before).find((l) => l.tag === 'curl' && l.dir === 'outbound');
      const resolvedBySidecar = logs.slice(before).some((l) => l.tag === 'curl' && l.dir === 'dns' && l.name === SERVICE_FQDN && l.type === 1 && l.answer === 'local');
      requests.push({ n, ok: r.code === 0 && answer.startsWith('Hi, I am pipy ok'), answer, endpoint: mine?.upstream, resolvedBySidecar });
      o.say(`$ curl -s ${SERVICE}:8080   # request ${n}\n${answer || `(failed: exit ${r.code} ${r.stderr.trim()})`}`);
      if (n === 1) {
        if (streams.length) await new Promise((res) => setTimeout(res, 200)); // the agents drain the trace every 50 ms
        for (const s of streams) s.close();
        firstLogs = logs.length;
      }
    }
    const sidecars = logs.slice(0, firstLogs).filter((l) => l.dir !== 'dns').map((l) => ({ pod: l.tag, dir: l.dir, origDst: l.origDst, upstream: l.upstream }));
    const dns = logs.slice(0, firstLogs).filter((l) => l.dir === 'dns').map((l) => ({ pod: l.tag, proto: l.proto, name: l.name, type: l.type, answer: l.answer }));
    const captured = logs.filter((l) => l.tag === 'curl' && l.dir === 'outbound').length;
    const resolvedBySidecar = requests.filter((r) => r.resolvedBySidecar).length;
    const clusterDnsQueries = dnsLog.filter((l) => l.includes(`query[A] ${SERVICE_FQDN} `)).length;
    const firstTrace = trace.filter((t) => t.pod?.startsWith(`${NAMESPACE}/`));

    o.say('');
    if (o.engine === 'ebpf') {
      o.say('what the datapath did for request 1 (meshwarp trace):');
      for (const t of firstTrace) o.say(`  ${t.node}  ${formatTrace(t)}`);
    }
    o.say('what the sidecars did for request 1:');
    for (const d of dns) o.say(`  ${d.pod.padEnd(11)} dns      ${d.proto} query ${d.name} ${d.type === 1 ? 'A' : d.type === 28 ? 'AAAA' : `type ${d.type}`} -> answered ${d.answer === 'local' ? 'itself (mesh name)' : d.answer}`);
    for (const s of sidecars) o.say(`  ${s.pod.padEnd(11)} ${s.dir.padEnd(8)} original destination ${s.origDst} -> connected to ${s.upstream}`);

    const failed = requests.filter((r) => !r.ok).length;
    const versions = new Set(requests.filter((r) => r.ok).map((r) => r.answer));
    const ok = failed === 0 && captured > 0;
    o.say('');
    o.say(`${ok ? 'OK' : 'FAILED'}: ${requests.length - failed}/${requests.length} requests answered (${[...versions].join(' / ')}), ${captured} captured by the client's sidecar; `
      + `${SERVICE} resolved ${resolvedBySidecar} times by the sidecar's DNS proxy, ${clusterDnsQueries} A queries for it at the cluster DNS`);

    const result: DemoResult = {
      engine: o.engine, profile: profile.name, prefix: lab.prefix,
      pods: pods.map((p) => ({ name: p.name, node: p.node.name, ip4: p.ip4, ip6: p.ip6 })),
      requests, captured, trace: firstTrace, sidecars, dns, resolvedBySidecar, clusterDnsQueries, ok,
    };
    if (o.keep) result.kept = { prefix: lab.prefix, hints: keepHints(lab, resolvConf, agents.get(n1)!) };
    o.onResult?.(result);
    if (o.keep) {
      o.say('');
      for (const h of result.kept!.hints) o.say(h);
      await new Promise<void>((resolve) => { process.once('SIGINT', resolve); process.once('SIGTERM', resolve); });
      o.say('tearing the lab down');
    }
    return result;
  } finally {
    await lab.destroy();
  }
}

/** dnsmasq on CLUSTER_DNS, an address on the node netns' loopback (as node-local-dns
 * binds the cluster DNS address on each node); its query log lines go to `log`. */
export async function startClusterDns(node: LabNode, log: string[]): Promise<void> {
  await node.check(['ip', 'addr', 'add', `${CLUSTER_DNS}/32`, 'dev', 'lo']);
  const child = node.spawn(['dnsmasq', '-k', '-C', '/dev/null', '--no-resolv', '--no-hosts', '--no-poll', '--pid-file=', '--user=root',
    '--bind-interfaces', `--listen-address=${CLUSTER_DNS}`, '--port=53', '--local=/cluster.local/',
    `--host-record=${SERVICE_FQDN},${SERVICE_IP}`, '--log-queries', '--log-facility=-'], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => { log.push(...d.split('\n').filter(Boolean)); });
  if (!await eventually(() => log.some((l) => /started, version/.test(l)), 10_000, 30)) throw new Error(`${node.name}: dnsmasq did not start: ${log.join('\n')}`);
}

async function waitForListening(p: LabPod, port: number): Promise<void> {
  const listening = async () => (await p.run(['sh', '-c', `ss -Htln 'sport = :${port}' | grep -q .`])).code === 0;
  if (!await eventually(listening, 5000, 30)) throw new Error(`${p.name}: nothing listening on :${port}`);
}

function keepHints(lab: Lab, resolvConf: string, agent: LabAgent): string[] {
  const mw = fromRoot('bin/meshwarp');
  return [
    `The lab ${lab.prefix} is still up.`,
    `  run a command in the curl pod:  ${mw} lab exec ${lab.prefix} node1/curl --uid ${APP_UID} --resolv-conf ${resolvConf} -- curl -s ${SERVICE}:8080`,
    `  watch the datapath (node1):      ${mw} trace --socket ${agent.socket}`,
    `  agent status (node1):            ${mw} status --socket ${agent.socket}`,
    '  tear it down:                    Ctrl-C here',
    `  (if this process was killed:     ${mw} lab destroy ${lab.prefix})`,
  ];
}
