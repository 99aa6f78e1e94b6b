// SPDX-License-Identifier: Apache-2.0
// `meshwarp agent`: the node daemon.
import { parseArgs } from 'node:util';
import { Agent, log, type Driver } from '../agent/agent.ts';
import { DEFAULTS, validateConfig, type AgentConfig } from '../agent/config.ts';
import { nodeAddresses, watchNodeAddresses } from '../agent/node-addrs.ts';
import { listenApi, listenMetrics } from '../agent/server.ts';
import { createDriver } from '../datapath/index.ts';
import { ensureBpffs } from '../sys/bpffs.ts';

const HELP = `usage: meshwarp agent [options]

  --engine ebpf|iptables how the sidecar dataplane redirects (default ${DEFAULTS.engine})
  --mode ebpf|iptables   deprecated alias of --engine
  --profile NAME         default mesh profile: istio, linkerd, kuma, osm, fsm (default ${DEFAULTS.profile})
  --cgroup PATH          cgroup2 directory whose pods are meshed (default: the cgroup2 root,
                         discovered from /proc/self/mountinfo)
  --node-ip IP           extra node address whose traffic (probes) is never captured; repeatable
                         (every address of the agent's netns is included, and followed as it changes)
  --pin-root DIR         bpffs directory for pins (default ${DEFAULTS.pinRoot})
  --socket PATH          root-only API socket (default ${DEFAULTS.socket})
  --state-dir DIR        record of meshed pods (default ${DEFAULTS.stateDir})
  --metrics HOST:PORT    Prometheus endpoint, "" to disable (default ${DEFAULTS.metrics})
  --tc auto|tcx|legacy   tc attachment (default ${DEFAULTS.tc})
  --sockmap auto|off|force  sockmap acceleration app <-> sidecar (S4): auto = on only when the
                         behaviour gate passes on this kernel (default), force = on regardless

SIGTERM/SIGINT stop the agent and leave the datapath running (pins keep it);
\`meshwarp uninstall\` removes everything.
`;

export function parseAgentArgs(argv: string[]): AgentConfig | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      engine: { type: 'string' }, mode: { type: 'string' }, profile: { type: 'string' }, cgroup: { type: 'string' },
      'node-ip': { type: 'string', multiple: true }, 'pin-root': { type: 'string' }, socket: { type: 'string' },
      'state-dir': { type: 'string' }, metrics: { type: 'string' }, tc: { type: 'string' }, sockmap: { type: 'string' }, help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) return undefined;
  if (values.mode !== undefined) log('warn', '--mode is deprecated: use --engine (same values)', { mode: values.mode });
  return validateConfig({
    engine: values.engine as AgentConfig['engine'], mode: values.mode, profile: values.profile, cgroupPath: values.cgroup,
    nodeIps: values['node-ip'], pinRoot: values['pin-root'], socket: values.socket, stateDir: values['state-dir'],
    metrics: values.metrics, tc: values.tc as AgentConfig['tc'], sockmap: values.sockmap as AgentConfig['sockmap'],
  });
}

export async function makeDriver(cfg: AgentConfig): Promise<Driver> {
  return createDriver(cfg.engine, { pinRoot: cfg.pinRoot, cgroupPath: cfg.cgroupPath, nodeIps: cfg.nodeIps, tc: cfg.tc, sockmap: cfg.sockmap });
}

export async function run(argv: string[]): Promise<number> {
  const cfg = parseAgentArgs(argv);
  if (!cfg) { process.stdout.write(HELP); return 0; }
  if (cfg.engine === 'ebpf') ensureBpffs();
  const configured = [...cfg.nodeIps];
  cfg.nodeIps = [...new Set([...configured, ...nodeAddresses()])];
  const agent = new Agent(cfg, await makeDriver(cfg));
  await agent.start();
  const unwatch = watchNodeAddresses((ips) => {
    cfg.nodeIps = [...new Set([...configured, ...ips])];
    log('info', 'node addresses changed', { nodeIps: cfg.nodeIps });
    agent.reconciler.setNodeIps(cfg.nodeIps).catch((e) => log('error', 'could not update node addresses', { error: (e as Error).message }));
  });
  const stop = async (code: number) => {
    unwatch();
    await agent.shutdown();
    process.exit(code);
  };
  const api = await listenApi(agent, cfg.socket, () => { unwatch(); api.close(); process.exit(0); });
  const metrics = cfg.metrics ? await listenMetrics(agent, cfg.metrics) : undefined;
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => { api.close(); metrics?.close(); void stop(0); });
  log('info', 'agent ready', { engine: cfg.engine, profile: cfg.profile, socket: cfg.socket, metrics: cfg.metrics, pods: agent.pods().length });
  process.stdout.write('ready\n');
  return new Promise(() => {}); // runs until a signal
}
