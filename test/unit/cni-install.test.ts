// SPDX-License-Identifier: Apache-2.0
// The conflist installer in temp dirs: insert, idempotence, watch re-insertion after the
// primary CNI rewrites its file, conversion of a lone .conf, byte-exact uninstall.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installCni, statePath, uninstallCni, watchConflist, type CniInstallOptions } from '../../src/cni/install.ts';
import { waitUntil } from '../helpers/poll.ts';

// A realistic primary config in its own formatting (4 spaces, key order, no trailing newline).
const PRIMARY = `{
    "cniVersion": "1.0.0",
    "name": "lab-net",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": "10.244.1.0/24" }], [{ "subnet": "fd00:10:244:1::/64" }]],
                "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }]
            }
        },
        { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true }
    ]
}`;

// What the primary writes when it regenerates its config (e.g. on restart): no meshwarp entry.
const PRIMARY_V2 = `{"cniVersion":"1.0.0","name":"lab-net","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.1.0/24"}]]}},{"type":"portmap","capabilities":{"portMappings":true}},{"type":"bandwidth","capabilities":{"bandwidth":true}}]}\n`;

function dirs(t: TestContext): Required<Pick<CniInstallOptions, 'binDir' | 'confDir' | 'stateDir'>> & { root: string } {
  const root = mkdtempSync(join(tmpdir(), 'mw-cni-inst-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const d = { root, binDir: join(root, 'bin'), confDir: join(root, 'net.d'), stateDir: join(root, 'state') };
  mkdirSync(d.confDir);
  return d;
}

type Plugins = { type: string; meshwarp?: Record<string, unknown> }[];
const plugins = (path: string): Plugins => (JSON.parse(readFileSync(path, 'utf8')) as { plugins: Plugins }).plugins;
const types = (path: string): string[] => plugins(path).map((p) => p.type);

const hasEntry = (path: string): boolean => {
  try {
    return types(path).filter((t) => t === 'meshwarp-cni').length === 1;
  } catch {
    return false; // mid-write or missing
  }
};

test('install appends the entry once, writes the plugin; uninstall restores the original bytes', (t) => {
  const d = dirs(t);
  const file = join(d.confDir, '10-lab.conflist');
  writeFileSync(file, PRIMARY, { mode: 0o644 });
  writeFileSync(join(d.confDir, '20-other.conflist'), '{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"ptp"}]}');
  const opts: CniInstallOptions = { ...d, settings: { socket: '/run/meshwarp/agent.sock', failurePolicy: 'open' } };
  const r = installCni(opts);
  assert.equal(r.action, 'inserted');
  assert.equal(r.conflist, file);
  assert.deepEqual(types(file), ['bridge', 'portmap', 'meshwarp-cni']);
  assert.deepEqual(plugins(file)[2], { type: 'meshwarp-cni', meshwarp: { socket: '/run/meshwarp/agent.sock', failurePolicy: 'open' } });
  assert.equal(statSync(file).mode & 0o777, 0o644, 'mode kept');
  assert.ok(!types(join(d.confDir, '20-other.conflist')).includes('meshwarp-cni'), 'only the file the runtime uses');
  const plugin = join(d.binDir, 'meshwarp-cni');
  assert.equal(statSync(plugin).mode & 0o777, 0o755);
  assert.ok(existsSync(statePath(d.stateDir)));
  const written = readFileSync(file);
  assert.equal(installCni(opts).action, 'unchanged');
  assert.ok(readFileSync(file).equals(written), 'second install changes nothing');
  assert.equal(installCni({ ...opts, settings: { failurePolicy: 'closed' } }).action, 'updated');
  assert.deepEqual(types(file), ['bridge', 'portmap', 'meshwarp-cni'], 'never twice');
  assert.equal(plugins(file)[2].meshwarp?.failurePolicy, 'closed');
  assert.deepEqual(readdirSync(d.confDir).sort(), ['10-lab.conflist', '20-other.conflist'], 'no temp files left');

  const u = uninstallCni({ stateDir: d.stateDir });
  assert.deepEqual(u.restored, [file]);
  assert.equal(readFileSync(file, 'utf8'), PRIMARY, 'byte-identical to the original');
  assert.ok(!existsSync(plugin));
  assert.ok(!existsSync(statePath(d.stateDir)));
  assert.deepEqual(uninstallCni({ stateDir: d.stateDir }), { restored: [], edited: [], removed: [] }, 'uninstall twice is harmless');
});

test('the installed wrapper is a working CNI plugin', (t) => {
  const d = dirs(t);
  writeFileSync(join(d.confDir, '10-lab.conflist'), PRIMARY);
  installCni(d);
  const r = spawnSync(join(d.binDir, 'meshwarp-cni'), [], {
    input: '{"cniVersion":"1.0.0"}', env: { CNI_COMMAND: 'VERSION', PATH: '/usr/bin:/bin', NODE_OPTIONS: '--no-such-flag' }, encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { cniVersion: '1.0.0', supportedVersions: ['1.0.0', '1.1.0'] });
  assert.ok(existsSync(join(d.stateDir, 'cni-compile-cache')), 'compile cache in the state dir');
  uninstallCni({ stateDir: d.stateDir });
  assert.deepEqual(readdirSync(d.stateDir), [], 'uninstall leaves the state dir empty');
});

test('watch re-inserts after the primary rewrites its file; uninstall leaves the primary version byte-identical', async (t) => {
  const d = dirs(t);
  const file = join(d.confDir, '10-lab.conflist');
  writeFileSync(file, PRIMARY);
  const ac = new AbortController();
  t.after(() => ac.abort());
  const events: string[] = [];
  const watching = watchConflist({ ...d, debounceMs: 50, onEvent: (e) => events.push(e.action) }, ac.signal);
  await waitUntil('initial insert', () => hasEntry(file));
  writeFileSync(file, PRIMARY_V2); // in place, not atomic: as many primaries do
  const ms = await waitUntil('re-insert', () => hasEntry(file));
  assert.ok(ms < 2000, `re-inserted after ${ms} ms`);
  assert.deepEqual(types(file), ['bridge', 'portmap', 'bandwidth', 'meshwarp-cni']);
  t.diagnostic(`re-inserted ${ms.toFixed(0)} ms after the rewrite`);
  // A new config that sorts first becomes the runtime's choice: it gets the entry too.
  const first = join(d.confDir, '05-new.conflist');
  const firstText = '{"cniVersion":"1.1.0","name":"new","plugins":[{"type":"ptp","ipam":{"type":"host-local"}}]}\n';
  writeFileSync(first, firstText);
  await waitUntil('insert into the new first file', () => hasEntry(first));
  await new Promise((r) => setTimeout(r, 200));
  ac.abort();
  await watching;
  assert.ok(events.includes('inserted'));
  const u = uninstallCni({ stateDir: d.stateDir });
  assert.equal(readFileSync(file, 'utf8'), PRIMARY_V2, "byte-identical to the primary's rewritten version");
  assert.equal(readFileSync(first, 'utf8'), firstText);
  assert.deepEqual(u.restored.sort(), [first, file].sort());
  assert.deepEqual(readdirSync(d.confDir).sort(), ['05-new.conflist', '10-lab.conflist']);
});

test('a lone .conf is converted to a .conflist and restored byte-identically on uninstall', async (t) => {
  const d = dirs(t);
  const conf = join(d.confDir, '10-bridge.conf');
  const text = '{\n  "cniVersion": "1.0.0",\n  "name": "solo",\n  "type": "bridge",\n  "bridge": "cni0",\n  "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}\n}\n';
  writeFileSync(conf, text, { mode: 0o600 });
  const r = installCni(d);
  assert.equal(r.action, 'converted');
  const list = join(d.confDir, '10-bridge.conflist');
  assert.equal(r.conflist, list);
  assert.ok(!existsSync(conf));
  assert.deepEqual(JSON.parse(readFileSync(list, 'utf8')), {
    cniVersion: '1.0.0', name: 'solo',
    plugins: [{ type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local', subnet: '10.22.0.0/16' } },
      { type: 'meshwarp-cni', meshwarp: { socket: '/run/meshwarp/agent.sock', failurePolicy: 'closed' } }],
  });
  assert.equal(statSync(list).mode & 0o777, 0o600);
  assert.equal(installCni(d).action, 'unchanged');
  const u = uninstallCni({ stateDir: d.stateDir });
  assert.deepEqual(u.restored, [conf]);
  assert.equal(readFileSync(conf, 'utf8'), text);
  assert.equal(statSync(conf).mode & 0o777, 0o600);
  assert.ok(!existsSync(list));
  assert.deepEqual(readdirSync(d.confDir), ['10-bridge.conf']);
});

test('watch follows a .conf the primary writes again after conversion', async (t) => {
  const d = dirs(t);
  const conf = join(d.confDir, '10-bridge.conf');
  writeFileSync(conf, '{"cniVersion":"1.0.0","name":"solo","type":"bridge"}');
  const ac = new AbortController();
  t.after(() => ac.abort());
  const watching = watchConflist({ ...d, debounceMs: 50 }, ac.signal);
  const list = join(d.confDir, '10-bridge.conflist');
  await waitUntil('conversion', () => hasEntry(list) && !existsSync(conf));
  const v2 = '{"cniVersion":"1.0.0","name":"solo","type":"bridge","mtu":1400}';
  writeFileSync(conf, v2);
  await waitUntil('re-conversion', () => !existsSync(conf) && hasEntry(list) && readFileSync(list, 'utf8').includes('1400'));
  ac.abort();
  await watching;
  uninstallCni({ stateDir: d.stateDir });
  assert.equal(readFileSync(conf, 'utf8'), v2);
  assert.deepEqual(readdirSync(d.confDir), ['10-bridge.conf']);
});

test('uninstall after an unwatched rewrite that kept our entry drops only the entry', (t) => {
  const d = dirs(t);
  const file = join(d.confDir, '10-lab.conflist');
  writeFileSync(file, PRIMARY);
  installCni(d);
  const rewritten = JSON.parse(readFileSync(file, 'utf8')) as { plugins: unknown[] };
  rewritten.plugins.splice(1, 0, { type: 'tuning' });
  writeFileSync(file, JSON.stringify(rewritten));
  const u = uninstallCni({ stateDir: d.stateDir });
  assert.deepEqual(u.edited, [file]);
  assert.deepEqual(types(file), ['bridge', 'tuning', 'portmap']);
});

test('refuses chains in CNI versions the plugin does not speak; skips unparseable files', (t) => {
  const d = dirs(t);
  const old = join(d.confDir, '10-old.conflist');
  const oldText = '{"cniVersion":"0.4.0","name":"old","plugins":[{"type":"bridge"}]}';
  writeFileSync(old, oldText);
  const r = installCni(d);
  assert.equal(r.action, 'unsupported');
  assert.match(r.message ?? '', /0\.4\.0/);
  assert.equal(readFileSync(old, 'utf8'), oldText, 'untouched');
  rmSync(old);
  writeFileSync(join(d.confDir, '01-broken.conflist'), '{"cniVersion": "1.0.0", "plu');
  writeFileSync(join(d.confDir, '10-ok.conflist'), PRIMARY);
  const r2 = installCni(d);
  assert.equal(r2.action, 'inserted');
  assert.equal(r2.conflist, join(d.confDir, '10-ok.conflist'));
  assert.equal(r2.skipped.length, 1);
  uninstallCni({ stateDir: d.stateDir });
  assert.equal(readFileSync(join(d.confDir, '10-ok.conflist'), 'utf8'), PRIMARY);
});

test('invalid settings never reach the file', (t) => {
  const d = dirs(t);
  writeFileSync(join(d.confDir, '10-lab.conflist'), PRIMARY);
  assert.throws(() => installCni({ ...d, settings: { failurePolicy: 'sometimes' as 'open' } }), /failurePolicy/);
  assert.throws(() => installCni({ ...d, settings: { socket: 'relative' } }), /socket/);
  assert.equal(readFileSync(join(d.confDir, '10-lab.conflist'), 'utf8'), PRIMARY);
});
