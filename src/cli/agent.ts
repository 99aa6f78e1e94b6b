// SPDX-License-Identifier: Apache-2.0
// `meshwarp agent`: the node daemon.
import { parseArgs } from 'node:util';
import { Agent, log, type Driver } from '../agent/agent.ts';
import { DEFAULTS, validateConfig, type AgentConfig, type KubeAgentConfig } from '../agent/config.ts';
import type { KubeSource } from '../agent/sources/kube.ts';
import { DEFAULT_EXCLUDE_NAMESPACES } from '../k8s/enroll.ts';
import { nodeAddresses, watchNodeAddresses } from '../agent/node-addrs.ts';
import { listenApi, listenMetrics } from '../agent/server.ts';
import { createDriver, type Dataplane } from '../datapath/index.ts';
import { ensureBpffs } from '../sys/bpffs.ts';

const HELP = `usage: meshwarp agent [options]

  --engine ebpf|iptables how the sidecar dataplane redirects (default ${DEFAULTS.engine})
  --mode ebpf|iptables   deprecated alias of --engine
  --profile NAME         default mesh profile: istio, linkerd, kuma, osm, fsm (default ${DEFAULTS.profile})
  --cgroup PATH          cgroup2 directory whose pods are meshed (default: the cgroup2 root,
                         discovered from /proc/self/mountinfo)
  --cluster-dns IP       the cluster DNS (as kubelet's --cluster-dns): pods' nameservers for DNS capture
                         when the runtime does not pass them (CNI dns capability); repeatable
  --node-ip IP           extra node address whose traffic (probes) is never captured; repeatable
                         (every address of the agent's netns is included, and followed as it changes)
  --pin-root DIR         bpffs directory for pins (default ${DEFAULTS.pinRoot})
  --socket PATH          root-only API socket (default ${DEFAULTS.socket})
  --state-dir DIR        record of meshed pods (default ${DEFAULTS.stateDir})
  --metrics HOST:PORT    Prometheus endpoint, "" to disable (default ${DEFAULTS.metrics})
  --tc auto|tcx|legacy   tc attachment (default ${DEFAULTS.tc})
  --dataplanes LIST      dataplanes this node runs, comma-separated: sidecar, ambient
                         (default ${DEFAULTS.dataplanes.join(',')}); a pod picks one with its CNI conf
                         (meshwarp.dataplane) or the annotation istio.io/dataplane-mode=ambient
  --ambient-fail-policy closed|open
                         ambient pods' new flows while no node proxy is ready: dropped, or
                         passed uncaptured (default ${DEFAULTS.ambientFailPolicy})
  --cni-conf-dir DIR     the node's CNI conf dir: /readyz also requires the meshwarp-cni entry
                         in its conflist (valid, pointing at --socket)
  --kubernetes           watch this node's pods and namespaces with the in-cluster ServiceAccount
  --kubeconfig PATH      ... or with this JSON kubeconfig (implies --kubernetes)
  --kube-server URL      API-server URL for the in-cluster credentials (default: the kubernetes Service)
  --node-name NAME       this node (default $NODE_NAME, from the downward API; never the hostname)
  --exclude-namespaces L comma-separated namespaces never meshed (default kube-system)
  --daemonset NS/NAME    the agent's DaemonSet: SIGTERM while it exists (an upgrade) keeps the datapath;
                         once it is gone or being deleted, SIGTERM removes what meshwarp made on the node
  --sockmap auto|off|force  sockmap acceleration app <-> sidecar (S4): auto = on only when the
                         behaviour gate passes on this kernel (default), force = on regardless
  --host-proc DIR        the host's /proc, to find pods by uid (repair of pods whose CNI ADD was
                         missed; default /proc)
  --netns-dir DIR        the runtime's netns bind mounts (default /var/run/netns)

SIGTERM/SIGINT stop the agent and leave the datapath running (pins keep it);
\`meshwarp uninstall\` removes everything.
`;

export function parseAgentArgs(argv: string[]): AgentConfig | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      engine: { type: 'string' }, mode: { type: 'string' }, profile: { type: 'string' }, cgroup: { type: 'string' },
      'node-ip': { type: 'string', multiple: true }, 'cluster-dns': { type: 'string', multiple: true }, 'pin-root': { type: 'string' }, socket: { type: 'string' },
      'state-dir': { type: 'string' }, metrics: { type: 'string' }, tc: { type: 'string' }, help: { type: 'boolean' },
      dataplanes: { type: 'string' }, 'ambient-fail-policy': { type: 'string' },
      kubernetes: { type: 'boolean' }, kubeconfig: { type: 'string' }, 'kube-server': { type: 'string' }, 'node-name': { type: 'string' },
      'exclude-namespaces': { type: 'string' }, daemonset: { type: 'string' }, sockmap: { type: 'string' },
      'cni-conf-dir': { type: 'string' }, 'host-proc': { type: 'string' }, 'netns-dir': { type: 'string' },
    },
    strict: true,
  });
  if (values.help) return undefined;
  if (values.mode !== undefined) log('warn', '--mode is deprecated: use --engine (same values)', { mode: values.mode });
  const cfg = validateConfig({
    engine: values.engine as AgentConfig['engine'], mode: values.mode, profile: values.profile, cgroupPath: values.cgroup,
    nodeIps: values['node-ip'], clusterDns: values['cluster-dns'], pinRoot: values['pin-root'], socket: values.socket, stateDir: values['state-dir'],
    metrics: values.metrics, tc: values.tc as AgentConfig['tc'],
    dataplanes: values.dataplanes?.split(',').map((d) => d.trim()).filter(Boolean) as AgentConfig['dataplanes'] | undefined,
    ambientFailPolicy: values['ambient-fail-policy'] as AgentConfig['ambientFailPolicy'],
    sockmap: values.sockmap as AgentConfig['sockmap'],
    cniConfDir: values['cni-conf-dir'],
  });
  if (values.kubernetes || values.kubeconfig) cfg.kube = kubeConfigOf(values, process.env);
  return cfg;
}

/** The Kubernetes side's settings; refuses to start without a node name. */
export function kubeConfigOf(values: { kubeconfig?: string; 'kube-server'?: string; 'node-name'?: string; 'exclude-namespaces'?: string; daemonset?: string; 'host-proc'?: string; 'netns-dir'?: string }, env: NodeJS.ProcessEnv): KubeAgentConfig {
  const nodeName = values['node-name'] ?? env.NODE_NAME;
  if (!nodeName) throw new Error('--kubernetes needs the node name: set NODE_NAME from the downward API (fieldRef spec.nodeName) or pass --node-name');
  const excl = values['exclude-namespaces'];
  const ds = values.daemonset?.split('/');
  if (ds && (ds.length !== 2 || !ds[0] || !ds[1])) throw new Error(`--daemonset ${values.daemonset}: expected NAMESPACE/NAME`);
  return {
    daemonSet: ds ? { namespace: ds[0], name: ds[1] } : undefined,
    kubeconfig: values.kubeconfig, server: values['kube-server'], nodeName,
    excludeNamespaces: excl === undefined ? [...DEFAULT_EXCLUDE_NAMESPACES] : excl.split(',').map((x) => x.trim()).filter(Boolean),
    self: env.POD_NAMESPACE && env.POD_NAME ? { namespace: env.POD_NAMESPACE, name: env.POD_NAME } : undefined,
    hostProc: values['host-proc'] ?? '/proc', netnsDir: values['netns-dir'] ?? '/var/run/netns',
  };
}

/** The ambient driver's pins: a directory of its own beside the sidecar's maps/ and links/. */
export const ambientPinRoot = (cfg: Pick<AgentConfig, 'pinRoot'>): string => `${cfg.pinRoot}/ambient`;

/**
 * One driver per dataplane of cfg.dataplanes, ambient first: uninstall stops drivers in
 * this order, and the sidecar driver's stop removes the whole pin root.
 */
export async function makeDrivers(cfg: AgentConfig): Promise<Map<Dataplane, Driver>> {
  const drivers = new Map<Dataplane, Driver>();
  for (const dp of [...cfg.dataplanes].sort((a, b) => (a === 'ambient' ? -1 : b === 'ambient' ? 1 : 0))) {
    const opts = dp === 'ambient'
      ? { pinRoot: ambientPinRoot(cfg), nodeIps: cfg.nodeIps, tc: cfg.tc, ambient: { failPolicy: cfg.ambientFailPolicy } }
      : { pinRoot: cfg.pinRoot, cgroupPath: cfg.cgroupPath, nodeIps: cfg.nodeIps, tc: cfg.tc, sockmap: cfg.sockmap };
    drivers.set(dp, await createDriver(cfg.engine, opts, dp));
  }
  return drivers;
}

/**
 * V8 flags of the agent process. Under pod churn V8 grows its young generation to 32 MB and keeps
 * it; 2 MB semi-spaces keep the agent ~14 MB smaller at 100 pods, at no CPU cost we could
 * measure (docs/agent.md, Memory). Set here, so every way of starting `meshwarp agent` gets them.
 */
export const AGENT_V8_FLAGS: readonly string[] = ['--max-semi-space-size=2'];

/** Replaces the process (same pid) with one that has AGENT_V8_FLAGS, unless it has them already. */
function reexecWithFlags(): void {
  if (AGENT_V8_FLAGS.every((f) => process.execArgv.includes(f))) return;
  process.execve!(process.execPath, [process.execPath, ...AGENT_V8_FLAGS, ...process.execArgv, ...process.argv.slice(1)], process.env);
}

export async function run(argv: string[]): Promise<number> {
  const cfg = parseAgentArgs(argv);
  if (!cfg) { process.stdout.write(HELP); return 0; }
  reexecWithFlags();
  if (cfg.engine === 'ebpf') ensureBpffs();
  const configured = [...cfg.nodeIps];
  cfg.nodeIps = [...new Set([...configured, ...nodeAddresses()])];
  const agent = new Agent(cfg, await makeDrivers(cfg));
  await agent.start();
  let kube: KubeSource | undefined;
  if (cfg.kube) {
    // Loaded only with --kubernetes: an agent fed by CNI alone never pays for the client,
    // node:https/TLS and the informers (docs/agent.md, memory).
    const [{ KubeSource }, { podRepairer }, { inClusterConfig, KubeClient, loadKubeconfig }] = await Promise.all([
      import('../agent/sources/kube.ts'), import('../agent/sources/podns.ts'), import('../k8s/client.ts')]);
    const k = cfg.kube;
    const client = new KubeClient(k.kubeconfig ? loadKubeconfig(k.kubeconfig) : inClusterConfig(process.env, k.server));
    kube = new KubeSource(client, agent.reconciler, {
      ...k, validate: (i) => agent.validate(i),
      repair: podRepairer((req) => agent.add(req), { procRoot: k.hostProc, netnsDir: k.netnsDir }),
    });
    agent.podSource = kube;
    kube.start();
  }
  const unwatch = watchNodeAddresses((ips) => {
    cfg.nodeIps = [...new Set([...configured, ...ips])];
    log('info', 'node addresses changed', { nodeIps: cfg.nodeIps });
    agent.reconciler.setNodeIps(cfg.nodeIps).catch((e) => log('error', 'could not update node addresses', { error: (e as Error).message }));
  });
  const stop = async (code: number) => {
    unwatch();
    const upgrade = kube ? await kube.daemonSetRemains(cfg.kube?.daemonSet) : true;
    await kube?.stop();
    if (upgrade) {
      await agent.shutdown();
    } else {
      log('info', 'the agent\'s DaemonSet is gone: removing what meshwarp made on this node', { daemonSet: cfg.kube?.daemonSet });
      await agent.uninstall();
    }
    process.exit(code);
  };
  const api = await listenApi(agent, cfg.socket, () => { unwatch(); api.close(); process.exit(0); });
  const metrics = cfg.metrics ? await listenMetrics(agent, cfg.metrics) : undefined;
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => { api.close(); metrics?.close(); void stop(0); });
  // Ready once the caches match the API server (the watch retries for ever; /readyz says why it is not ready).
  while (kube && !kube.synced) await new Promise((r) => setTimeout(r, 50));
  await kube?.idle(); // reconciled (and repaired) before saying ready
  log('info', 'agent ready', { engine: cfg.engine, dataplanes: cfg.dataplanes, profile: cfg.profile, socket: cfg.socket, metrics: cfg.metrics, pods: agent.pods().length, node: cfg.kube?.nodeName });
  process.stdout.write('ready\n');
  return new Promise(() => {}); // runs until a signal
}
