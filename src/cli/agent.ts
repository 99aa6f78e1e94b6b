// SPDX-License-Identifier: Apache-2.0
// `meshwarp agent`: the node daemon.
import { parseArgs } from 'node:util';
import { Agent, log, type Driver } from '../agent/agent.ts';
import { DEFAULTS, validateConfig, type AgentConfig } from '../agent/config.ts';
import { listenApi, listenMetrics } from '../agent/server.ts';
import { createDriver } from '../datapath/index.ts';
import { ensureBpffs } from '../sys/bpffs.ts';
import { addresses } from '../sys/links.ts';

const HELP = `usage: meshwarp agent [options]

  --mode ebpf|iptables   interception mode (default ${DEFAULTS.mode})
  --profile NAME         default mesh profile: istio, linkerd, kuma, osm, fsm (default ${DEFAULTS.profile})
  --cgroup PATH          cgroup2 directory whose pods are meshed (default: the cgroup2 root,
                         discovered from /proc/self/mountinfo)
  --node-ip IP           extra node address whose traffic (probes) is never captured; repeatable
                         (every address of the agent's netns is included already)
  --pin-root DIR         bpffs directory for pins (default ${DEFAULTS.pinRoot})
  --socket PATH          root-only API socket (default ${DEFAULTS.socket})
  --state-dir DIR        record of meshed pods (default ${DEFAULTS.stateDir})
  --metrics HOST:PORT    Prometheus endpoint, "" to disable (default ${DEFAULTS.metrics})
  --tc auto|tcx|legacy   tc attachment (default ${DEFAULTS.tc})

SIGTERM/SIGINT stop the agent and leave the datapath running (pins keep it);
\`meshwarp uninstall\` removes everything.
`;

export function parseAgentArgs(argv: string[]): AgentConfig | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      mode: { type: 'string' }, profile: { type: 'string' }, cgroup: { type: 'string' },
      'node-ip': { type: 'string', multiple: true }, 'pin-root': { type: 'string' }, socket: { type: 'string' },
      'state-dir': { type: 'string' }, metrics: { type: 'string' }, tc: { type: 'string' }, help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) return undefined;
  return validateConfig({
    mode: values.mode as AgentConfig['mode'], profile: values.profile, cgroupPath: values.cgroup,
    nodeIps: values['node-ip'], pinRoot: values['pin-root'], socket: values.socket, stateDir: values['state-dir'],
    metrics: values.metrics, tc: values.tc as AgentConfig['tc'],
  });
}

/**
 * Every address of the agent's netns (the node's): kubelet probes and other
 * node-local traffic to pods come from one of them, whichever interface
 * (bridge gateway, uplink) the route picks.
 */
function nodeAddresses(): string[] {
  return addresses().filter((a) => a.scope !== 'host' && a.scope !== 'link').map((a) => a.local);
}

export async function makeDriver(cfg: AgentConfig): Promise<Driver> {
  return createDriver(cfg.mode, { pinRoot: cfg.pinRoot, cgroupPath: cfg.cgroupPath, nodeIps: cfg.nodeIps, tc: cfg.tc });
}

export async function run(argv: string[]): Promise<number> {
  const cfg = parseAgentArgs(argv);
  if (!cfg) { process.stdout.write(HELP); return 0; }
  if (cfg.mode === 'ebpf') ensureBpffs();
  cfg.nodeIps = [...new Set([...cfg.nodeIps, ...nodeAddresses()])];
  const agent = new Agent(cfg, await makeDriver(cfg));
  await agent.start();
  const stop = async (code: number) => {
    await agent.shutdown();
    process.exit(code);
  };
  const api = await listenApi(agent, cfg.socket, () => { api.close(); process.exit(0); });
  const metrics = cfg.metrics ? await listenMetrics(agent, cfg.metrics) : undefined;
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => { api.close(); metrics?.close(); void stop(0); });
  log('info', 'agent ready', { mode: cfg.mode, profile: cfg.profile, socket: cfg.socket, metrics: cfg.metrics, pods: agent.pods().length });
  process.stdout.write('ready\n');
  return new Promise(() => {}); // runs until a signal
}
