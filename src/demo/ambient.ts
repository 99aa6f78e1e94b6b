// SPDX-License-Identifier: Apache-2.0
// `meshwarp demo --dataplane ambient`: the ambient seed (Istio ambient, eBPF redirection)
// in the lab, for real.
//
//   node1: curl, pipy-ok-v1, ztunnel (node proxy)     node2: pipy-ok-v2, ztunnel
//   pods created through the CNI chain whose meshwarp conf says dataplane ambient,
//   one `meshwarp agent --dataplanes ambient` per node, the lab node proxy (haproxy,
//   transparent) per node, announced to its agent over the agent's socket.
//
// No sidecars: curl's connection to v1 (same node) and to v2 (other node) is taken at
// curl's veth to node1's proxy, which connects to the original destination from its own
// address; on node2 the inbound connection is taken again at v2's veth to node2's proxy.
// The apps answer with the client address they saw: a node proxy's.
//
// Engine ebpf: the node proxies are the lab's HBONE proxy (src/lab/hbone/), with a lab CA and
// workload registry (LabMesh, istiod's role): curl -> v2 crosses from node1's proxy to node2's as
// an HTTP/2 CONNECT stream over mutual TLS to v2's address on 15008, and the demo prints that hop
// with both SPIFFE identities, as each proxy saw it.
//
// Names: curl asks for pipy-ok-v1 / pipy-ok-v2; its resolv.conf names the cluster DNS (dnsmasq on
// 10.96.0.53 in each node, agents --cluster-dns). The query is captured to node1's node proxy's DNS
// proxy (15053), which answers pipy-ok-v*.ambient.svc.cluster.local itself; the cluster DNS sees none.
//
// --engine iptables (in-pod, Istio >= 1.21): the agent gives each node proxy the pods' netns
// and waits for it to open its listeners there; rules inside each pod netns send its TCP to
// them. Upstream sockets live in the pod netns too, so an enrolled server sees its own address
// (its inbound listener connected to it). Shown instead of tc programs: the in-pod rules with
// their counters after request 1, and the proxy's listeners inside a pod's netns.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { agentStream } from '../agent/client.ts';
import { tcxPrograms } from '../bpf/index.ts';
import { formatTrace, type TraceRecord } from '../datapath/sidecar/trace.ts';
import { Lab, LabAgent, LabNodeProxy, eventually, labRunDir, uniquePrefix, type LabNode, type LabPod } from '../lab/index.ts';
import { LabMesh, type LabHboneProxy } from '../lab/hbone/lab.ts';
import type { HboneHop } from '../lab/hbone/proxy.ts';
import { withNetns } from '../sys/netns.ts';
import { CLUSTER_DNS, startClusterDns } from './demo.ts';

const NODE = process.execPath;
export const AMBIENT_NAMESPACE = 'ambient';
const APP_UID = 1000;

export interface AmbientDemoOptions {
  requests: number;
  /** ebpf (default) or iptables (in-pod). */
  engine?: 'ebpf' | 'iptables';
  say: (line: string) => void;
  onResult?: (r: AmbientDemoResult) => void;
}

export interface AmbientDemoRequest { n: number; to: string; ok: boolean; answer: string; sawClient?: string; viaProxy: boolean; name: string }
export interface AmbientDemoResult {
  dataplane: 'ambient';
  engine: 'ebpf' | 'iptables';
  prefix: string;
  pods: { name: string; node: string; ip4: string; ip6: string }[];
  proxies: { node: string; ip4: string; ip6: string }[];
  requests: AmbientDemoRequest[];
  /** Requests whose server saw a node proxy as the client. */
  captured: number;
  trace: (TraceRecord & { node: string })[];
  /** The programs on each enrolled pod's host veth, per hook (BPF_PROG_QUERY for tcx, cls_bpf otherwise). */
  attached: { pod: string; veth: string; hook: string; programs: string[] }[];
  /** In-pod engine: each enrolled pod's mangle and nat rules (iptables-save -c) and the listeners the node proxy opened in its netns. */
  inPod?: { pod: string; rules: string[]; listeners: string[] }[];
  /** Engine ebpf: the HBONE hop of the first cross-node request, as node1's proxy (client) and node2's (server) saw it. */
  hbone?: { client?: HboneHop; server?: HboneHop };
  /** Queries for the apps' names the node proxies' DNS proxies answered themselves, and that reached the cluster DNS. */
  resolvedByProxy: number;
  clusterDnsQueries: number;
  /** What each agent reports, as the seed's istio-cni log line. */
  ambientConfig: { node: string; ztunnelReady: boolean; redirectMode: string }[];
  ok: boolean;
}

export async function runAmbientDemo(o: AmbientDemoOptions): Promise<AmbientDemoResult> {
  const engine = o.engine ?? 'ebpf';
  const inPod = engine === 'iptables';
  const lab = await Lab.create({ prefix: uniquePrefix('da') });
  // Stopped in `finally`, also when a step fails (a running proxy's control socket would keep the process alive).
  const proxies = new Map<LabNode, LabNodeProxy>();
  try {
    o.say(inPod
      ? `lab ${lab.prefix}: 2 nodes, dataplane ambient, engine iptables (in-pod: rules and the node proxy's listeners inside each enrolled pod's netns)`
      : `lab ${lab.prefix}: 2 nodes, dataplane ambient, engine ebpf (tc programs on each enrolled pod's veth, node proxy per node)`);
    const nodes = [lab.addNode('node1'), lab.addNode('node2')];
    const agents = new Map<LabNode, LabAgent>();
    const proxies = new Map<LabNode, LabNodeProxy | LabHboneProxy>();
    // eBPF: HBONE node proxies, their CA and registry (in-pod: haproxy, as before).
    const mesh = inPod ? undefined : LabMesh.create(lab);
    const dnsLog: string[] = [];
    try {
      for (const node of nodes) await startClusterDns(node, dnsLog);
      for (const node of nodes) {
        const agent = new LabAgent(node, { engine, dataplanes: ['ambient'], args: ['--cluster-dns', CLUSTER_DNS] });
        await agent.start();
        agents.set(node, agent);
        lab.enableCni(node, { agentSocket: agent.socket, dataplane: 'ambient' });
        const dns = { names: [], upstream: [CLUSTER_DNS] };
        const px = mesh ? await mesh.startProxy(node, 'ztunnel', { dns }) : await LabNodeProxy.start(node, 'ztunnel', { dns });
        await px.announceTo(agent);
        proxies.set(node, px);
        o.say(`  ${node.name}: agent up (--cluster-dns ${CLUSTER_DNS}), node proxy ${px.id} (${px.ip4}, ${px.ip6}) announced itself, listeners ${mesh ? '15001/15006/15008 (HBONE)' : '15001/15006'}, DNS 15053`);
      }
      const [n1, n2] = nodes;
      const curl = await lab.addPodCni(n1, 'curl', { namespace: AMBIENT_NAMESPACE });
      const v1 = await lab.addPodCni(n1, 'pipy-ok-v1', { namespace: AMBIENT_NAMESPACE });
      const v2 = await lab.addPodCni(n2, 'pipy-ok-v2', { namespace: AMBIENT_NAMESPACE });
      const pods = [curl, v1, v2];
      for (const p of pods) o.say(`  pod ${AMBIENT_NAMESPACE}/${p.name.padEnd(10)} on ${p.node.name}  ${p.ip4}  ${p.ip6}  (enrolled at CNI ADD)`);
      if (mesh) {
        // The registry learns the enrolled pods (istiod watching pods); each proxy gets the
        // certificates of its own node's workloads only.
        for (const p of pods) mesh.add(p, { namespace: AMBIENT_NAMESPACE });
        await mesh.push();
        o.say(`  lab CA (openssl, trust domain ${mesh.trustDomain}) issued ${pods.map((p) => `${mesh.identity(p)} (to ${p.node.name}'s proxy)`).join(', ')}`);
      }
      // The node proxies' DNS proxies answer the apps' names (ztunnel answers the mesh's services).
      const fqdn = (p: LabPod) => `${p.name}.${AMBIENT_NAMESPACE}.svc.cluster.local`;
      const names = [v1, v2].map((p) => `${fqdn(p)}=${p.ip4},${p.ip6}`);
      for (const px of proxies.values()) await px.setDns({ names, upstream: [CLUSTER_DNS] });
      mkdirSync(labRunDir(lab.prefix), { recursive: true });
      const resolvConf = `${labRunDir(lab.prefix)}/resolv.conf`;
      writeFileSync(resolvConf, `search ${AMBIENT_NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local\nnameserver ${CLUSTER_DNS}\noptions ndots:5\n`);
      o.say(`  the names: curl's resolv.conf names the cluster DNS ${CLUSTER_DNS} (dnsmasq in each node); ${inPod ? 'its in-pod rules redirect' : 'its veth sends'} `
        + `the query to node1's node proxy's DNS proxy (:15053), which answers ${fqdn(v1)} and ${fqdn(v2)} itself`);
      for (const [p, v] of [[v1, 'v1'], [v2, 'v2']] as const) {
        p.spawn([NODE, '-e', `require('http').createServer((q,r)=>r.end('Hi, I am pipy ok ${v} ! (client seen: '+q.socket.remoteAddress.replace(/^::ffff:/,'')+')\\n')).listen(8080,'::')`], { uid: APP_UID });
        await waitForListening(p, 8080);
      }

      const trace: (TraceRecord & { node: string })[] = [];
      const streams = inPod ? [] : await Promise.all(nodes.map((n) => agentStream('/v1/trace', (r) => trace.push({ ...(r as TraceRecord), node: n.name }), agents.get(n)!.socket)));
      await new Promise((r) => setTimeout(r, 100));

      o.say('');
      const proxyIps = new Set([...proxies.values()].flatMap((p) => [p.ip4, p.ip6]));
      const targets: [string, LabPod, 4 | 6][] = [[v2.name, v2, 4], [v1.name, v1, 4], [v2.name, v2, 6], [v1.name, v1, 6]];
      const requests: AmbientDemoRequest[] = [];
      let inPodView: AmbientDemoResult['inPod'];
      let hbone: AmbientDemoResult['hbone'];
      let hboneOf = 0;
      for (let n = 1; n <= o.requests; n++) {
        const [host, pod, fam] = targets[(n - 1) % targets.length];
        const r = await curl.run(['curl', '-s', `-${fam}`, '-m', '5', `http://${host}:8080/`], { uid: APP_UID, timeoutMs: 10_000, resolvConf });
        const answer = r.stdout.trim();
        const sawClient = /client seen: ([^)]+)\)/.exec(answer)?.[1];
        // In-pod: the server's own inbound listener connected to it from the server's own address.
        const via = inPod ? !!sawClient && [pod.ip4, pod.ip6].includes(sawClient) : !!sawClient && proxyIps.has(sawClient);
        requests.push({ n, to: `${pod.name} (${pod.node.name})`, ok: r.code === 0 && answer.startsWith('Hi, I am pipy ok'), answer, sawClient, viaProxy: via, name: host });
        o.say(`$ curl -s -${fam} http://${host}:8080/   # request ${n}: curl (node1) -> ${pod.name} (${pod.node.name}), IPv${fam}\n${answer || `(failed: exit ${r.code} ${r.stderr.trim()})`}`);
        if (n === 1 && !inPod) {
          await new Promise((res) => setTimeout(res, 200)); // the agents drain the trace every 50 ms
          for (const s of streams) s.close();
        }
        if (n === 1 && inPod) inPodView = pods.map((p) => inPodOf(p));
        if (mesh && pod === v2 && !hbone) {
          const authority = fam === 4 ? `${pod.ip4}:8080` : `[${pod.ip6}]:8080`; // CONNECT names the pod's address
          const client = (await (proxies.get(n1) as LabHboneProxy).hops()).filter((h) => h.side === 'client' && h.authority === authority).pop();
          const server = (await (proxies.get(n2) as LabHboneProxy).hops()).filter((h) => h.side === 'server' && h.authority === authority).pop();
          hbone = { ...(client ? { client } : {}), ...(server ? { server } : {}) };
          hboneOf = n;
        }
      }
      const first = trace.filter((t) => t.pod?.startsWith(`${AMBIENT_NAMESPACE}/`));
      o.say('');
      if (inPod) {
        o.say('what the in-pod rules did for request 1 (iptables-save -c -t mangle / -t nat in each pod netns, rules that counted packets):');
        for (const v of inPodView ?? []) {
          o.say(`  ${v.pod}:`);
          for (const l of v.rules) o.say(`    ${l}`);
        }
        o.say('');
        o.say('the node proxy\'s listeners inside each enrolled pod\'s netns (ss -ltn):');
        for (const v of inPodView ?? []) o.say(`  ${v.pod}: ${v.listeners.join('  ')}`);
      } else {
        o.say('what the datapath did for request 1 (meshwarp trace):');
        for (const t of first) o.say(`  ${t.node}  ${formatTrace(t)}`);
      }

      if (mesh) {
        o.say('');
        o.say(`the HBONE hop of request ${hboneOf} (curl -> pipy-ok-v2, node1's proxy -> node2's proxy: HTTP/2 CONNECT over mutual TLS 1.3):`);
        const c = hbone?.client;
        const sv = hbone?.server;
        if (c) o.say(`  node1 proxy  CONNECT ${c.authority} to ${c.peer}  ${c.status}  as ${c.srcId} -> server proved ${c.dstId}  (pooled connection ${c.connection}, Forwarded: for="${c.forwardedFor}")`);
        else o.say('  node1 proxy  (no HBONE hop recorded)');
        if (sv) o.say(`  node2 proxy  accepted from ${sv.peer}  client proved ${sv.srcId} (chain to the lab CA, a workload of node1) -> ${sv.dstId}  ${sv.status}  traceparent ${sv.traceparent ?? '-'}`);
        else o.say('  node2 proxy  (no HBONE hop recorded)');
      }

      if (!inPod) o.say('');
      if (!inPod) o.say('programs on each enrolled pod\'s host veth (the seed\'s `tc filter show dev <veth> ingress`):');
      const attached: AmbientDemoResult['attached'] = [];
      for (const p of inPod ? [] : pods) {
        for (const hook of ['ingress', 'egress'] as const) {
          const programs = programsOn(p, hook);
          attached.push({ pod: p.name, veth: p.hostVeth, hook, programs });
          o.say(`  ${p.node.name} ${p.hostVeth.padEnd(14)} ${hook.padEnd(7)} (${p.name})  ${programs.join('; ') || '(none)'}`);
        }
      }

      o.say('');
      const ambientConfig: AmbientDemoResult['ambientConfig'] = [];
      for (const [n, a] of agents) {
        const s = await a.request<{ ambient?: { ztunnelReady: boolean; redirectMode: string } }>('GET', '/v1/status');
        const c = { ztunnelReady: !!s.ambient?.ztunnelReady, redirectMode: s.ambient?.redirectMode ?? '?' };
        ambientConfig.push({ node: n.name, ...c });
        o.say(`  ${n.name} agent: ambient config: ${JSON.stringify(c)}`);
      }

      const failed = requests.filter((r) => !r.ok).length;
      const captured = requests.filter((r) => r.viaProxy).length;
      const hboneOk = !mesh || (hbone?.client?.status === 200 && hbone.server?.status === 200);
      const appNames = new Set([v1, v2].map(fqdn));
      const resolvedByProxy = [...proxies.values()].flatMap((p) => p.dnsLog).filter((l) => appNames.has(l.name) && l.answer === 'local').length;
      const clusterDnsQueries = dnsLog.filter((l) => [...appNames].some((nm) => l.includes(` ${nm} `))).length;
      const ok = failed === 0 && captured === requests.length && hboneOk && ambientConfig.every((c) => c.ztunnelReady && c.redirectMode === engine)
        && resolvedByProxy >= requests.length && clusterDnsQueries === 0;
      o.say('');
      o.say(`${ok ? 'OK' : 'FAILED'}: ${requests.length - failed}/${requests.length} requests answered, ${captured} through a node proxy; `
        + `the apps' names answered ${resolvedByProxy} times by the node proxy's DNS proxy, ${clusterDnsQueries} queries for them at the cluster DNS`);
      const result: AmbientDemoResult = {
        dataplane: 'ambient', engine, prefix: lab.prefix, ...(inPodView ? { inPod: inPodView } : {}),
        pods: pods.map((p) => ({ name: p.name, node: p.node.name, ip4: p.ip4, ip6: p.ip6 })),
        proxies: [...proxies].map(([n, p]) => ({ node: n.name, ip4: p.ip4, ip6: p.ip6 })),
        requests, captured, trace: first, attached, ...(hbone ? { hbone } : {}), resolvedByProxy, clusterDnsQueries, ambientConfig, ok,
      };
      o.onResult?.(result);
      return result;
    } finally {
      for (const p of proxies.values()) await p.stop();
      mesh?.ca.destroy();
    }
  } finally {
    for (const p of proxies.values()) await p.stop().catch(() => {});
    await lab.destroy();
  }
}

/** A pod's in-pod rules that counted packets, and the listeners in its netns. */
function inPodOf(p: LabPod): { pod: string; rules: string[]; listeners: string[] } {
  const rules: string[] = [];
  for (const save of ['iptables-save', 'ip6tables-save']) {
    for (const table of ['mangle', 'nat']) {
      const text = execFileSync('nsenter', [`--net=${p.netnsPath}`, '--', save, '-c', '-t', table], { encoding: 'utf8' });
      for (const l of text.split('\n')) if (/MESHWARP_AM/.test(l) && !/^\[0:0\]/.test(l) && l.startsWith('[')) rules.push(`${save === 'iptables-save' ? 'v4' : 'v6'} ${l}`);
    }
  }
  const ss = execFileSync('nsenter', [`--net=${p.netnsPath}`, '--', 'ss', '-Hltn'], { encoding: 'utf8' });
  const listeners = ss.split('\n').map((l) => l.trim().split(/\s+/)[3]).filter((a): a is string => !!a && /:1500[168]$/.test(a));
  return { pod: p.name, rules, listeners };
}

/** tcx programs from BPF_PROG_QUERY (names from bpftool), else the legacy cls_bpf filters `tc` lists. */
function programsOn(p: LabPod, hook: 'ingress' | 'egress'): string[] {
  const ids = withNetns(p.node.netnsPath, () => tcxPrograms(p.hostIfindex, hook));
  const out = ids.map((id) => {
    try {
      const info = JSON.parse(execFileSync('bpftool', ['prog', 'show', 'id', String(id), '--json'], { encoding: 'utf8' })) as { name?: string; tag?: string };
      return `tcx ${info.name ?? '?'} id ${id} tag ${info.tag ?? '?'}`;
    } catch {
      return `tcx id ${id}`;
    }
  });
  const tc = execFileSync('ip', ['netns', 'exec', p.node.netns, 'tc', 'filter', 'show', 'dev', p.hostVeth, hook], { encoding: 'utf8' });
  for (const l of tc.split('\n')) if (/ handle /.test(l)) out.push(`cls_bpf ${l.trim().replace(/^filter protocol all /, '')}`);
  return out;
}

async function waitForListening(p: LabPod, port: number): Promise<void> {
  const listening = async () => (await p.run(['sh', '-c', `ss -Htln 'sport = :${port}' | grep -q .`])).code === 0;
  if (!await eventually(listening, 5000, 30)) throw new Error(`${p.name}: nothing listening on :${port}`);
}
