// SPDX-License-Identifier: Apache-2.0
// `meshwarp lab exec PREFIX NODE/POD [--uid U] [--hosts FILE] [--resolv-conf FILE] -- CMD...` and
// `meshwarp lab destroy PREFIX`: for labs kept up by `meshwarp demo --keep`.
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { cgroup2Mount } from '../sys/cgroup.ts';
import { netnsPath } from '../sys/netns.ts';
import { cleanupPrefix } from '../lab/cleanup.ts';
import { wrapArgv } from '../lab/proc.ts';

const HELP = `usage: meshwarp lab exec PREFIX NODE/POD [--uid UID] [--hosts FILE] [--resolv-conf FILE] -- COMMAND...
       meshwarp lab destroy PREFIX
`;

export async function run(argv: string[]): Promise<number> {
  const [sub, prefix, ...rest] = argv;
  if (sub === 'destroy' && prefix) {
    cleanupPrefix(prefix);
    process.stdout.write(`lab ${prefix} removed\n`);
    return 0;
  }
  if (sub !== 'exec' || !prefix) { process.stdout.write(HELP); return sub ? 2 : 0; }
  const dash = rest.indexOf('--');
  if (dash < 1) throw new Error('lab exec: expected NODE/POD [options] -- COMMAND...');
  const { values: o, positionals } = parseArgs({
    args: rest.slice(0, dash), allowPositionals: true, strict: true,
    options: { uid: { type: 'string' }, hosts: { type: 'string' }, 'resolv-conf': { type: 'string' } },
  });
  const m = /^([a-z0-9-]+)\/([a-z0-9-]+)$/.exec(positionals[0] ?? '');
  if (!m) throw new Error(`lab exec: expected NODE/POD, got ${JSON.stringify(positionals[0])}`);
  const ctx = { netnsPath: netnsPath(`${prefix}-${m[1]}-${m[2]}`), cgroupPath: `${cgroup2Mount()}/${prefix}/${m[1]}/${m[2]}` };
  const full = wrapArgv(ctx, rest.slice(dash + 1), { uid: o.uid === undefined ? undefined : Number(o.uid), hostsFile: o.hosts, resolvConf: o['resolv-conf'] });
  const child = spawn(full[0], full.slice(1), { stdio: 'inherit' });
  return new Promise((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
}
