// SPDX-License-Identifier: Apache-2.0
// `meshwarp cni install|uninstall|watch`: puts the chained plugin into the node's CNI
// config, keeps it there, and takes it out again.
import { parseArgs } from 'node:util';
import type { FailurePolicy, MeshwarpSettings } from './config.ts';
import {
  DEFAULT_BIN_DIR, DEFAULT_CONF_DIR, DEFAULT_STATE_DIR, installCni, uninstallCni, watchConflist, type CniInstallOptions,
  type InstallReport,
} from './install.ts';

const USAGE = `usage: meshwarp cni <install|uninstall|watch> [options]

  install     write ${'`meshwarp-cni`'} into the CNI bin dir and append it to the node's CNI config
  watch       install, then keep the entry in place when the primary CNI rewrites its config
              (runs until SIGTERM/SIGINT)
  uninstall   remove the entry (restoring the original file bytes when untouched) and the plugin

options:
  --cni-bin-dir DIR        CNI plugin directory (default ${DEFAULT_BIN_DIR})
  --cni-conf-dir DIR       CNI network config directory (default ${DEFAULT_CONF_DIR})
  --state-dir DIR          where the original config bytes are kept (default ${DEFAULT_STATE_DIR})
  --socket PATH            agent socket written into the entry (plugin default /run/meshwarp/agent.sock)
  --failure-policy P       closed (default: pods wait for the agent) or open (pods start unmeshed)
  --exclude-namespaces L   comma-separated namespaces never meshed (plugin default kube-system)
  --timeout-ms N           plugin → agent timeout (plugin default 5000)
  --node PATH              Node.js >= 24 the plugin wrapper runs (default: the project's)
  --full-plugin sea|wrapper  the forwarder's fallback, meshwarp-cni-node: the single executable
                           (self-contained; what the image's cni container installs) or a wrapper
                           running this checkout's Node.js (default)
  --artifact-dir DIR       the built binaries and their SHA256SUMS (default build/cni/linux-<arch>)
  --json                   print reports as JSON lines
`;

function out(json: boolean, obj: unknown, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(obj)}\n` : `${text}\n`);
}

function describe(r: InstallReport): string {
  const lines = r.skipped.map((s) => `skipped ${s.path}: ${s.reason}`);
  switch (r.action) {
    case 'inserted': lines.push(`added meshwarp to ${r.conflist}`); break;
    case 'converted': lines.push(`converted the single-plugin config into ${r.conflist} and added meshwarp`); break;
    case 'updated': lines.push(`updated the meshwarp entry in ${r.conflist}`); break;
    case 'unchanged': lines.push(`meshwarp already in ${r.conflist}`); break;
    default: lines.push(`${r.action}: ${r.message ?? ''}`);
  }
  lines.push(`plugin: ${r.plugin}`);
  return lines.join('\n');
}

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'cni-bin-dir': { type: 'string' },
        'cni-conf-dir': { type: 'string' },
        'state-dir': { type: 'string' },
        socket: { type: 'string' },
        'failure-policy': { type: 'string' },
        'exclude-namespaces': { type: 'string' },
        'timeout-ms': { type: 'string' },
        node: { type: 'string' },
        'full-plugin': { type: 'string' },
        'artifact-dir': { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    process.stderr.write(`meshwarp cni: ${e instanceof Error ? e.message : String(e)}\n\n${USAGE}`);
    return 2;
  }
  const { values: v, positionals } = parsed;
  const sub = positionals[0];
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1 || !['install', 'uninstall', 'watch'].includes(sub ?? '')) {
    process.stderr.write(USAGE);
    return 2;
  }
  const settings: Partial<MeshwarpSettings> = {};
  if (v.socket !== undefined) settings.socket = v.socket;
  if (v['failure-policy'] !== undefined) settings.failurePolicy = v['failure-policy'] as FailurePolicy;
  if (v['exclude-namespaces'] !== undefined) settings.excludeNamespaces = v['exclude-namespaces'].split(',').map((s) => s.trim()).filter(Boolean);
  if (v['timeout-ms'] !== undefined) settings.timeoutMs = Number(v['timeout-ms']);
  const opts: CniInstallOptions = { settings };
  if (v['cni-bin-dir'] !== undefined) opts.binDir = v['cni-bin-dir'];
  if (v['cni-conf-dir'] !== undefined) opts.confDir = v['cni-conf-dir'];
  if (v['state-dir'] !== undefined) opts.stateDir = v['state-dir'];
  if (v.node !== undefined) opts.nodePath = v.node;
  if (v['artifact-dir'] !== undefined) opts.artifactDir = v['artifact-dir'];
  if (v['full-plugin'] !== undefined) {
    if (v['full-plugin'] !== 'sea' && v['full-plugin'] !== 'wrapper') {
      process.stderr.write(`meshwarp cni: --full-plugin must be sea or wrapper, not ${JSON.stringify(v['full-plugin'])}\n`);
      return 2;
    }
    opts.fullPlugin = v['full-plugin'];
  }
  const json = v.json;
  try {
    if (sub === 'install') {
      const r = installCni(opts);
      out(json, r, describe(r));
      if (r.action === 'no-config') process.stderr.write('meshwarp cni: nothing to insert into yet; `meshwarp cni watch` inserts when the primary CNI writes its config\n');
      return r.action === 'unsupported' || r.action === 'conflict' ? 1 : 0;
    }
    if (sub === 'uninstall') {
      const r = uninstallCni(opts);
      const text = [...r.restored.map((p) => `restored ${p}`), ...r.edited.map((p) => `removed the meshwarp entry from ${p}`),
        ...r.removed.map((p) => `removed ${p}`)].join('\n') || 'nothing to remove';
      out(json, r, text);
      return 0;
    }
    const ac = new AbortController();
    const stop = (): void => ac.abort();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    await watchConflist({
      ...opts,
      onEvent: (e) => out(json, { ts: new Date().toISOString(), ...e }, 'skipped' in e ? describe(e) : `error: ${e.message}`),
    }, ac.signal);
    return 0;
  } catch (e) {
    process.stderr.write(`meshwarp cni ${sub}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
