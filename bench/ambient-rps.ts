// SPDX-License-Identifier: Apache-2.0
// Requests/s through the ambient node proxy, both engines, in the conformance lab:
// enrolled pod a -> not enrolled pod u on the same node (outbound capture), wrk with
// keep-alive and with one request per connection, 3 short runs each; plus the direct
// path (not enrolled v -> u) for scale. The app is the benchmark's haproxy app server.
// About a minute in all. Not a test: figures only (docs/ambient.md).
//   sudo .tools/node/bin/node --disable-warning=ExperimentalWarning bench/ambient-rps.ts [--json]
import { spawn } from 'node:child_process';
import { writeFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { appServerConfig } from '../src/bench/haproxy.ts';
import { summarize, spread } from '../src/bench/stats.ts';
import { WRK_REPORT_LUA, runWrk, waitListening } from '../src/bench/tools.ts';

const RUNS = 3;
const SECONDS = 3;
const CONNS = 16;
const ENGINES = ['iptables', 'ebpf'] as const;

interface Row { engine: string; path: string; mode: 'keep-alive' | 'close'; rps: number[]; p99Us: number[]; errors: number }

/** One engine, in this process (MESHWARP_* set by the parent before the harness loads). */
async function child(withDirect: boolean): Promise<Row[]> {
  const { MeshLab, MODE, APP_UID, stat } = await import('../test/conformance/harness.ts');
  const env = await MeshLab.create([
    { node: 'node1', name: 'a', profile: 'istio', serve: [] },
    { node: 'node1', name: 'v', serve: [] },
    { node: 'node1', name: 'u', serve: [] },
  ], { tag: 'mab' });
  const lua = `/tmp/${env.prefix}-wrk.lua`;
  const cfg = `/tmp/${env.prefix}-app.cfg`;
  const rows: Row[] = [];
  try {
    writeFileSync(lua, WRK_REPORT_LUA, { mode: 0o644 });
    writeFileSync(cfg, appServerConfig(8080), { mode: 0o644 });
    const u = env.pod('u');
    u.sb.spawn(['haproxy', '-db', '-f', cfg], { uid: APP_UID, env: { PATH: process.env.PATH } });
    await waitListening(u.sb, [8080]);
    const paths: [string, 'a' | 'v'][] = [[`ambient/${MODE}`, 'a'], ...(withDirect ? [['direct', 'v'] as [string, 'v']] : [])];
    for (const [path, from] of paths) {
      for (const mode of ['keep-alive', 'close'] as const) {
        const row: Row = { engine: MODE, path, mode, rps: [], p99Us: [], errors: 0 };
        const c0 = stat(env.pod('a').driver, 'am_captured_out') ?? 0n;
        for (let i = 0; i < RUNS; i++) {
          const w = await runWrk(env.pod(from).sb, { url: `http://${u.ip(4)}:8080/`, connections: CONNS, durationS: SECONDS, script: lua, close: mode === 'close', uid: APP_UID });
          row.rps.push(Math.round(w.rps));
          row.p99Us.push(w.p99Us);
          row.errors += Object.values(w.errors).reduce((s, x) => s + x, 0);
        }
        const captured = (stat(env.pod('a').driver, 'am_captured_out') ?? 0n) - c0;
        // The figures mean something only if the path was the one named.
        if ((from === 'a') !== (captured > 0n)) throw new Error(`${path} ${mode}: ${captured} connections captured`);
        rows.push(row);
      }
    }
  } finally {
    await env.destroy();
    rmSync(lua, { force: true });
    rmSync(cfg, { force: true });
  }
  return rows;
}

function runChild(engine: string, withDirect: boolean): Promise<Row[]> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', fileURLToPath(import.meta.url), '--child', ...(withDirect ? ['--direct'] : [])], {
      env: { ...process.env, MESHWARP_DATAPLANE: 'ambient', MESHWARP_ENGINE: engine }, stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.once('exit', (code) => code === 0 ? resolve(JSON.parse(out) as Row[]) : reject(new Error(`${engine}: exit ${code}`)));
  });
}

if (process.argv.includes('--child')) {
  process.stdout.write(JSON.stringify(await child(process.argv.includes('--direct'))));
} else {
  const rows: Row[] = [];
  for (const [i, e] of ENGINES.entries()) rows.push(...await runChild(e, i === 0));
  if (process.argv.includes('--json')) process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
  else {
    console.log(`same node, a -> u:8080, wrk -t1 -c${CONNS}, ${RUNS} runs of ${SECONDS} s; median [min–max]`);
    for (const r of rows) {
      console.log(`${r.path.padEnd(16)} ${r.mode.padEnd(10)} ${spread(summarize(r.rps)).padEnd(22)} req/s  p99 ${spread(summarize(r.p99Us))} us  errors ${r.errors}  runs ${r.rps.join(' ')}`);
    }
  }
}
