// SPDX-License-Identifier: Apache-2.0
// `meshwarp demo`: the seed's two-node demo (src/demo/demo.ts).
import { parseArgs } from 'node:util';
import { runDemo } from '../demo/demo.ts';
import { runAmbientDemo } from '../demo/ambient.ts';
import { parseDataplane, parseEngine } from '../datapath/driver.ts';
import { getProfile } from '../profiles/index.ts';
import { ensureBpffs } from '../sys/bpffs.ts';

const HELP = `usage: meshwarp demo [--dataplane sidecar|ambient] [--engine ebpf|iptables] [--profile osm|istio|linkerd|kuma|fsm] [--requests N] [--keep] [--json]

--dataplane ambient (the ambient seed): pods enrolled in the ambient dataplane at CNI
ADD, a node proxy per node; curl reaches pipy-ok-v1 (same node) and pipy-ok-v2
(other node) through the node proxies; prints the trace of request 1, the
programs on each pod veth and the agents' {"ztunnelReady","redirectMode"}.
--engine iptables: in-pod redirection (Istio >= 1.21): rules and the node proxy's
listeners inside each enrolled pod's netns; prints those rules' counters and listeners.

Builds a two-node lab (network namespaces), creates the pods curl and
pipy-ok-v1 on node1 and pipy-ok-v2 on node2 through the real CNI chain with a
meshwarp agent per node and dnsmasq as the cluster DNS, runs
\`curl -s pipy-ok:8080\` from the curl pod (the name resolved through DNS: with
--profile istio, the default, the query is captured to the sidecar's DNS proxy),
and shows what the datapath and the sidecars did. Exits non-zero if a request
failed or none was captured. --keep leaves the lab up until Ctrl-C.
--mode is the old name of --engine.
`;

export async function run(argv: string[]): Promise<number> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      engine: { type: 'string' }, mode: { type: 'string' }, dataplane: { type: 'string', default: 'sidecar' }, profile: { type: 'string', default: 'istio' },
      requests: { type: 'string', default: '4' }, keep: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean' },
    },
    strict: true,
  });
  if (o.help) { process.stdout.write(HELP); return 0; }
  if (o.engine !== undefined && o.mode !== undefined && o.engine !== o.mode) throw new Error('--mode is the old name of --engine: give one of them');
  const engine = parseEngine(o.engine ?? o.mode ?? 'ebpf');
  getProfile(o.profile!);
  const requests = Number(o.requests);
  if (!Number.isInteger(requests) || requests < 1 || requests > 1000) throw new Error(`--requests: expected 1-1000, got ${o.requests}`);
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces and loads eBPF: run it as root');
  const dataplane = parseDataplane(o.dataplane!);
  if (engine === 'ebpf') ensureBpffs();
  const say = o.json ? () => {} : (l: string) => process.stdout.write(`${l}\n`);
  if (dataplane === 'ambient') {
    if (o.keep) throw new Error('--keep: not available with --dataplane ambient yet');
    const r = await runAmbientDemo({ requests, engine, say, onResult: (res) => { if (o.json) process.stdout.write(`${JSON.stringify(res, null, 2)}\n`); } });
    return r.ok ? 0 : 1;
  }
  const result = await runDemo({
    engine, profile: o.profile!, requests, keep: !!o.keep, say,
    onResult: (r) => { if (o.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`); },
  });
  return result.ok ? 0 : 1;
}
