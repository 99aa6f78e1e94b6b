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
import { execFileSync } from 'node:child_process';
import { agentStream } from '../agent/client.ts';
import { tcxPrograms } from '../bpf/index.ts';
import { formatTrace, type TraceRecord } from '../datapath/sidecar/trace.ts';
import { Lab, LabAgent, LabNodeProxy, eventually, uniquePrefix, type LabNode, type LabPod } from '../lab/index.ts';
import { withNetns } from '../sys/netns.ts';

const NODE = process.execPath;
export const AMBIENT_NAMESPACE = 'ambient';
const APP_UID = 1000;

export interface AmbientDemoOptions {
  requests: number;
  say: (line: string) => void;
  onResult?: (r: AmbientDemoResult) => void;
}

export interface AmbientDemoRequest { n: number; to: string; ok: boolean; answer: string; sawClient?: string; viaProxy: boolean }
export interface AmbientDemoResult {
  dataplane: 'ambient';
  engine: 'ebpf';
  prefix: string;
  pods: { name: string; node: string; ip4: string; ip6: string }[];
  proxies: { node: string; ip4: string; ip6: string }[];
  requests: AmbientDemoRequest[];
  /** Requests whose server saw a node proxy as the client. */
  captured: number;
  trace: (TraceRecord & { node: string })[];
  /** The programs on each enrolled pod's host veth, per hook (BPF_PROG_QUERY for tcx, cls_bpf otherwise). */
  attached: { pod: string; veth: string; hook: string; programs: string[] }[];
  /** What each agent reports, as the seed's istio-cni log line. */
  ambientConfig: { node: string; ztunnelReady: boolean; redirectMode: string }[];
  ok: boolean;
}

export async function runAmbientDemo(o: AmbientDemoOptions): Promise<AmbientDemoResult> {
  const lab = await Lab.create({ prefix: uniquePrefix('da') });
  try {
    o.say(`lab ${lab.prefix}: 2 nodes, dataplane ambient, engine ebpf (tc programs on each enrolled pod's veth, node proxy per node)`);
    const nodes = [lab.addNode('node1'), lab.addNode('node2')];
    const agents = new Map<LabNode, LabAgent>();
    const proxies = new Map<LabNode, LabNodeProxy>();
    for (const node of nodes) {
      const agent = new LabAgent(node, { engine: 'ebpf', dataplanes: ['ambient'] });
      await agent.start();
      agents.set(node, agent);
      lab.enableCni(node, { agentSocket: agent.socket, dataplane: 'ambient' });
      const px = await LabNodeProxy.start(node);
      await px.announceTo(agent);
      proxies.set(node, px);
      o.say(`  ${node.name}: agent up, node proxy ${px.id} (${px.ip4}, ${px.ip6}) announced itself, listeners 15001/15006`);
    }
    const [n1, n2] = nodes;
    const curl = await lab.addPodCni(n1, 'curl', { namespace: AMBIENT_NAMESPACE });
    const v1 = await lab.addPodCni(n1, 'pipy-ok-v1', { namespace: AMBIENT_NAMESPACE });
    const v2 = await lab.addPodCni(n2, 'pipy-ok-v2', { namespace: AMBIENT_NAMESPACE });
    const pods = [curl, v1, v2];
    for (const p of pods) o.say(`  pod ${AMBIENT_NAMESPACE}/${p.name.padEnd(10)} on ${p.node.name}  ${p.ip4}  ${p.ip6}  (enrolled at CNI ADD)`);
    for (const [p, v] of [[v1, 'v1'], [v2, 'v2']] as const) {
      p.spawn([NODE, '-e', `require('http').createServer((q,r)=>r.end('Hi, I am pipy ok ${v} ! (client seen: '+q.socket.remoteAddress.replace(/^::ffff:/,'')+')\\n')).listen(8080,'::')`], { uid: APP_UID });
      await waitForListening(p, 8080);
    }

    const trace: (TraceRecord & { node: string })[] = [];
    const streams = await Promise.all(nodes.map((n) => agentStream('/v1/trace', (r) => trace.push({ ...(r as TraceRecord), node: n.name }), agents.get(n)!.socket)));
    await new Promise((r) => setTimeout(r, 100));

    o.say('');
    const proxyIps = new Set([...proxies.values()].flatMap((p) => [p.ip4, p.ip6]));
    const targets: [string, LabPod][] = [[v2.ip4, v2], [v1.ip4, v1], [`[${v2.ip6}]`, v2], [`[${v1.ip6}]`, v1]];
    const requests: AmbientDemoRequest[] = [];
    for (let n = 1; n <= o.requests; n++) {
      const [host, pod] = targets[(n - 1) % targets.length];
      const r = await curl.run(['curl', '-s', '-m', '5', `http://${host}:8080/`], { uid: APP_UID, timeoutMs: 10_000 });
      const answer = r.stdout.trim();
      const sawClient = /client seen: ([^)]+)\)/.exec(answer)?.[1];
      requests.push({ n, to: `${pod.name} (${pod.node.name})`, ok: r.code === 0 && answer.startsWith('Hi, I am pipy ok'), answer, sawClient, viaProxy: !!sawClient && proxyIps.has(sawClient) });
      o.say(`$ curl -s http://${host}:8080/   # request ${n}: curl (node1) -> ${pod.name} (${pod.node.name})\n${answer || `(failed: exit ${r.code} ${r.stderr.trim()})`}`);
      if (n === 1) {
        await new Promise((res) => setTimeout(res, 200)); // the agents drain the trace every 50 ms
        for (const s of streams) s.close();
      }
    }
    const first = trace.filter((t) => t.pod?.startsWith(`${AMBIENT_NAMESPACE}/`));
    o.say('');
    o.say('what the datapath did for request 1 (meshwarp trace):');
    for (const t of first) o.say(`  ${t.node}  ${formatTrace(t)}`);

    o.say('');
    o.say('programs on each enrolled pod\'s host veth (the seed\'s `tc filter show dev <veth> ingress`):');
    const attached: AmbientDemoResult['attached'] = [];
    for (const p of pods) {
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
    const ok = failed === 0 && captured === requests.length && ambientConfig.every((c) => c.ztunnelReady && c.redirectMode === 'ebpf');
    o.say('');
    o.say(`${ok ? 'OK' : 'FAILED'}: ${requests.length - failed}/${requests.length} requests answered, ${captured} through a node proxy`);
    const result: AmbientDemoResult = {
      dataplane: 'ambient', engine: 'ebpf', prefix: lab.prefix,
      pods: pods.map((p) => ({ name: p.name, node: p.node.name, ip4: p.ip4, ip6: p.ip6 })),
      proxies: [...proxies].map(([n, p]) => ({ node: n.name, ip4: p.ip4, ip6: p.ip6 })),
      requests, captured, trace: first, attached, ambientConfig, ok,
    };
    o.onResult?.(result);
    for (const p of proxies.values()) await p.stop();
    return result;
  } finally {
    await lab.destroy();
  }
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
