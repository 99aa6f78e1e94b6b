// SPDX-License-Identifier: Apache-2.0
// CNI plugin candidates side by side (issue 14): what a container runtime waits for.
//   sudo .tools/node/bin/node bench/cni-latency.ts [--runs N (default 200)] [--active N (default 50)] [--json]
// Needs `make cni-sea` (the single executables are built here too, with and without a startup
// snapshot, into a temp dir). One lab node, a real meshwarp agent (eBPF engine), a pod made by the
// real chain (loopback, bridge + host-local, meshwarp-cni). Per candidate:
//  - ADD against a ready agent: process start to exit of `meshwarp-cni ADD` for that live pod
//    (the agent answers a duplicate ADD: a full request, no datapath change), `--runs` times,
//    NODE_EXTRA_CA_CERTS unset and set;
//  - VERSION (no agent work; the forwarder still asks the agent to run it): the start-up cost alone;
//  - ADD → redirection active: meshwarp-cni DEL of the pod (unmeshed), then the clock starts,
//    meshwarp-cni ADD, and a prober in the pod (app uid, started before) connects to a service
//    address every millisecond until one lands on the sidecar port: `--active` times.
// Candidates: `wrapper` (today's /bin/sh + Node.js on the TypeScript sources, compile cache),
// `sea` and `sea-snapshot` (Node.js single executable application of the esbuild bundle, without
// and with a V8 startup snapshot), `forwarder` (the static C forwarder, request run by the agent;
// alone in its directory, so a run that fell back to the full plugin would fail, not pass).
// All traffic stays inside the lab's network namespaces.
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { defaultArtifactDir, wrapperScript } from '../src/cni/install.ts';
import { Lab, LabAgent, uniquePrefix, waitForLine, type LabPod } from '../src/lab/index.ts';

const { values: v } = parseArgs({
  options: { runs: { type: 'string', default: '200' }, active: { type: 'string', default: '50' }, json: { type: 'boolean' }, only: { type: 'string' }, prefix: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  strict: true,
});
if (v.help) {
  process.stdout.write('usage: bench/cni-latency.ts [--runs N] [--active N] [--only a,b] [--prefix P] [--json]\n');
  process.exit(0);
}
const RUNS = Number(v.runs);
const ACTIVE = Number(v.active);
if (process.getuid?.() !== 0) throw new Error('run as root: it builds network namespaces and loads eBPF');

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const CA = process.env.NODE_EXTRA_CA_CERTS || '/etc/ssl/certs/ca-certificates.crt';
const SERVICE = '10.96.0.10';
const OUTBOUND = 15001; // the lab agent's default profile (osm)
const APP_UID = 1000;

interface Stats { p50: number; p99: number; min: number; max: number; n: number }
function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)];
  return { p50: q(0.5), p99: q(0.99), min: s[0], max: s[s.length - 1], n: s.length };
}
const fmt = (s: Stats) => `p50 ${s.p50.toFixed(1)} ms  p99 ${s.p99.toFixed(1)} ms  (min ${s.min.toFixed(1)}, max ${s.max.toFixed(1)}, n ${s.n})`;

/** One plugin run: process start to exit, in ms (monotonic, comparable with other processes' hrtime). */
function runPlugin(bin: string, env: Record<string, string>, stdin: string): Promise<{ ms: number; start: bigint; code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const p = spawn(bin, [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', () => {});
    p.on('error', reject);
    p.on('exit', (code) => resolve({ ms: Number(process.hrtime.bigint() - start) / 1e6, start, code: code ?? -1, out }));
    p.stdin.end(stdin);
  });
}

const work = mkdtempSync(join(tmpdir(), 'mw-bench-cni-'));
const lab = await Lab.create({ prefix: v.prefix ?? uniquePrefix('bc') });
let failed = false;
try {
  // Candidates, each alone in its own directory under the name runtimes exec.
  const cands: Record<string, string> = {};
  const dir = (name: string) => { const d = join(work, name); mkdirSync(d); return join(d, 'meshwarp-cni'); };
  const art = defaultArtifactDir();
  cands.wrapper = dir('wrapper');
  writeFileSync(cands.wrapper, wrapperScript(join(ROOT, '.tools/node/bin/node'), join(work, 'compile-cache')), { mode: 0o755 });
  cands.sea = dir('sea');
  copyFileSync(join(art, 'meshwarp-cni-node'), cands.sea);
  cands['sea-snapshot'] = dir('sea-snapshot');
  execFileSync(join(ROOT, 'scripts/build-cni.sh'), [cands['sea-snapshot'], '--snapshot'], { stdio: 'inherit' });
  cands.forwarder = dir('forwarder');
  copyFileSync(join(art, 'meshwarp-cni'), cands.forwarder);
  const only = v.only ? new Set(v.only.split(',')) : undefined;

  const n1 = lab.addNode('node1');
  const agent = new LabAgent(n1);
  await agent.start();
  lab.enableCni(n1, { agentSocket: agent.socket });
  const pod: LabPod = await lab.addPodCni(n1, 'bench');
  const att = pod.cni!;
  const entry = att.conflist.plugins.find((p) => p.type === 'meshwarp-cni')!;
  const stdinFor = (command: string) => JSON.stringify({ cniVersion: att.conflist.cniVersion, name: att.conflist.name, ...entry, ...(command === 'DEL' ? {} : { prevResult: att.result }) });
  const baseEnv = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', CNI_PATH: '/usr/lib/cni', ...att.env };

  // The pod's sidecar port and a prober that reports (hrtime) the first connect that reaches it.
  const listener = pod.spawn([process.execPath, '-e',
    `require('net').createServer((s)=>s.destroy()).listen(${OUTBOUND},'127.0.0.1',()=>console.log('ready'))`]);
  await waitForLine(listener, /ready/);

  const results: Record<string, { version: Stats; addUnset: Stats; addSet: Stats; active?: Stats }> = {};
  for (const [name, bin] of Object.entries(cands)) {
    if (only && !only.has(name)) continue;
    const r: Partial<(typeof results)[string]> = {};
    {
      const env = { ...baseEnv, CNI_COMMAND: 'VERSION' };
      const ms: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        // The node's config as stdin (VERSION reads only cniVersion): the forwarder finds the agent by it.
        const x = await runPlugin(bin, env, stdinFor('ADD'));
        if (x.code !== 0) throw new Error(`${name} VERSION exited ${x.code}: ${x.out}`);
        ms.push(x.ms);
      }
      r.version = stats(ms);
    }
    for (const [key, ca] of [['addUnset', undefined], ['addSet', CA]] as const) {
      const env: Record<string, string> = { ...baseEnv, CNI_COMMAND: 'ADD', ...(ca ? { NODE_EXTRA_CA_CERTS: ca } : {}) };
      const stdin = stdinFor('ADD');
      await runPlugin(bin, env, stdin); // page cache, compile cache
      const ms: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        const x = await runPlugin(bin, env, stdin);
        if (x.code !== 0) throw new Error(`${name} ADD exited ${x.code}: ${x.out}`);
        ms.push(x.ms);
      }
      r[key] = stats(ms);
    }
    if (ACTIVE > 0) {
      const ms: number[] = [];
      for (let i = 0; i < ACTIVE; i++) {
        const del = await runPlugin(bin, { ...baseEnv, CNI_COMMAND: 'DEL' }, stdinFor('DEL'));
        if (del.code !== 0) throw new Error(`${name} DEL exited ${del.code}: ${del.out}`);
        const prober = pod.spawn([process.execPath, '-e', `
          const net = require('net');
          console.log('ready');
          const t0 = Date.now();
          (function again() {
            const s = net.connect({ host: '${SERVICE}', port: 8080, timeout: 20 });
            const retry = () => { s.destroy(); if (Date.now() - t0 > 10000) { console.log('timeout'); process.exit(1); } setTimeout(again, 1); };
            s.once('connect', () => { console.log('hit', process.hrtime.bigint().toString()); process.exit(0); });
            s.once('error', retry); s.once('timeout', retry);
          })();`], { uid: APP_UID });
        await waitForLine(prober, /ready/);
        let line = '';
        const hit = new Promise<string>((resolve) => {
          prober.stdout!.on('data', (d: Buffer) => { line += d.toString(); if (/hit \d+|timeout/.test(line)) resolve(line); });
        });
        const add = await runPlugin(bin, { ...baseEnv, CNI_COMMAND: 'ADD' }, stdinFor('ADD'));
        if (add.code !== 0) throw new Error(`${name} ADD exited ${add.code}: ${add.out}`);
        const m = /hit (\d+)/.exec(await hit);
        if (!m) throw new Error(`${name}: the pod's connect was never captured`);
        ms.push(Number(BigInt(m[1]) - add.start) / 1e6);
      }
      r.active = stats(ms);
    }
    results[name] = r as (typeof results)[string];
    if (!v.json) {
      process.stdout.write(`${name}\n  VERSION, NODE_EXTRA_CA_CERTS unset ${fmt(r.version!)}\n  ADD, NODE_EXTRA_CA_CERTS unset  ${fmt(r.addUnset!)}\n  ADD, NODE_EXTRA_CA_CERTS set    ${fmt(r.addSet!)}\n`
        + (r.active ? `  ADD -> redirection active       ${fmt(r.active)}\n` : ''));
    }
  }
  const load = execFileSync('cat', ['/proc/loadavg']).toString().trim();
  if (v.json) process.stdout.write(`${JSON.stringify({ runs: RUNS, active: ACTIVE, loadavg: load, results })}\n`);
  else process.stdout.write(`loadavg at the end: ${load}\n`);
} catch (e) {
  failed = true;
  process.stderr.write(`bench/cni-latency: ${e instanceof Error ? e.stack : String(e)}\n`);
} finally {
  await lab.destroy();
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
