// SPDX-License-Identifier: Apache-2.0
// Bounded, deterministic fuzzing of the plugin's input: malformed JSON, unknown versions,
// missing fields, wrong types, bad env, random bytes, oversized input. Every case must end
// in exit 1 with a parseable CNI error on stdout, no stack trace, and no ADD reaching the agent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runPlugin } from '../../src/cni/plugin.ts';
import type { AgentResult } from '../../src/cni/agent-client.ts';
import { FakeAgent, addEnv, netConf, parseCniError, runCni } from './cni-fixtures.ts';

/** mulberry32: small seeded PRNG so every run sees the same cases. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Case {
  kind: string;
  env: Record<string, string | undefined>;
  stdin: Buffer;
}

const WRONG: unknown[] = [null, 0, -1, 1.5, true, '', 'x', [], [1], {}, { a: 1 }, '1.0.0 ', '../x'];
const BAD_VERSIONS: unknown[] = ['0.4.0', '0.3.1', '0.1.0', '1.2.0', '2.0.0', '1.0', 'v1.0.0', '1.0.0-rc1', '', ' 1.0.0', 1, 1.1, null, true, [], {}];
// Values each field refuses (so every generated case is invalid by construction).
const FIELD_BAD: Record<string, unknown[]> = {
  name: [null, 0, true, '', '-x', 'a b', [], {}],
  type: [null, 0, '', 'bridge', 'MESHWARP', 'meshwarp', [], {}],
  prevResult: [null, 0, 'x', true, [], [{}]],
  meshwarp: [null, 0, 'x', true, [], [{}]],
  'meshwarp.socket': [null, 0, '', 'rel/path', `/${'x'.repeat(200)}`, [], {}],
  'meshwarp.failurePolicy': [null, 0, '', 'Closed', 'fail', [], {}],
  'meshwarp.excludeNamespaces': [null, 0, '', 'kube-system', [1], [''], {}],
  'meshwarp.timeoutMs': [null, 0, -5, 1.5, '5000', 60001, [], {}],
  'meshwarp.mode': [null, 0, '', 'Sidecar', 'a b', [], {}],
  'meshwarp.bogus': [1, 'x', null],
  runtimeConfig: [{ meshwarp: 'x' }, { meshwarp: [] }, { meshwarp: { skip: 'yes' } }, { meshwarp: { skip: 1 } }],
  args: [{ meshwarp: 5 }, { meshwarp: { skip: 'maybe' } }, { meshwarp: { skip: null } }],
};

function makeCases(n: number, seed: number, socket: string): Case[] {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const base = (): Record<string, unknown> => netConf(socket);
  const cases: Case[] = [];
  const gens: (() => Case)[] = [
    () => { // random bytes
      const b = Buffer.alloc(Math.floor(rnd() * 2048));
      for (let i = 0; i < b.length; i++) b[i] = Math.floor(rnd() * 256);
      if (b.length > 0 && rnd() < 0.5) b[0] = 0x7b; // sometimes look like an object
      return { kind: 'random-bytes', env: addEnv(), stdin: b };
    },
    () => { // malformed JSON: truncation or byte mutation until it no longer parses
      const s = JSON.stringify(base());
      for (;;) {
        const chars = [...s];
        if (rnd() < 0.5) chars.length = Math.floor(rnd() * chars.length);
        else for (let k = 0; k < 1 + Math.floor(rnd() * 4); k++) chars[Math.floor(rnd() * chars.length)] = pick(['{', '}', '"', ',', ':', '\\', '\u0000', ']', 'x']);
        const t = chars.join('');
        try { JSON.parse(t); } catch { return { kind: 'malformed-json', env: addEnv(), stdin: Buffer.from(t) }; }
      }
    },
    () => { // unknown or malformed versions
      const c = base();
      c.cniVersion = pick(BAD_VERSIONS);
      return { kind: 'bad-version', env: addEnv(pick(['ADD', 'CHECK', 'DEL', 'STATUS', 'GC'])), stdin: Buffer.from(JSON.stringify(c)) };
    },
    () => { // missing required fields
      const c = base();
      const drop = pick([['cniVersion'], ['name'], ['type'], ['prevResult'], ['name', 'type'], ['cniVersion', 'prevResult']]);
      for (const k of drop) delete c[k];
      return { kind: `missing-${drop.join('+')}`, env: addEnv(pick(['ADD', 'CHECK'])), stdin: Buffer.from(JSON.stringify(c)) };
    },
    () => { // wrong types / values
      const c = base();
      const field = pick(Object.keys(FIELD_BAD));
      const value = pick(FIELD_BAD[field]);
      if (field.startsWith('meshwarp.')) (c.meshwarp as Record<string, unknown>)[field.slice(9)] = value;
      else c[field] = value;
      return { kind: `wrong-${field}`, env: addEnv(), stdin: Buffer.from(JSON.stringify(c)) };
    },
    () => { // whole document of the wrong JSON type
      return { kind: 'not-object', env: addEnv(), stdin: Buffer.from(JSON.stringify(pick(WRONG.filter((w) => typeof w !== 'object' || w === null || Array.isArray(w))))) };
    },
    () => { // bad environment with a valid config
      const over: Record<string, string | undefined> = pick([
        { CNI_COMMAND: undefined }, { CNI_COMMAND: '' }, { CNI_COMMAND: 'add' }, { CNI_COMMAND: 'ADD ' }, { CNI_COMMAND: 'REMOVE' },
        { CNI_CONTAINERID: undefined }, { CNI_CONTAINERID: '_x' }, { CNI_CONTAINERID: 'a b' }, { CNI_NETNS: undefined },
        { CNI_IFNAME: undefined }, { CNI_IFNAME: '' }, { CNI_IFNAME: '.' }, { CNI_IFNAME: 'x'.repeat(16) }, { CNI_IFNAME: 'e th0' },
        { CNI_IFNAME: 'a:b' }, { CNI_ARGS: 'novalue' }, { CNI_ARGS: '=x' }, { CNI_ARGS: 'A=1;broken' },
      ]);
      return { kind: `env-${Object.keys(over)[0]}`, env: addEnv('ADD', over), stdin: Buffer.from(JSON.stringify(base())) };
    },
  ];
  for (let i = 0; i < n; i++) cases.push(pick(gens)());
  return cases;
}

let agent: FakeAgent;
before(async () => { agent = await new FakeAgent().start(); });
after(async () => { await agent.stop(); });

test('500 malformed inputs in-process: exit 1, CNI error JSON, agent never asked to ADD', async () => {
  const cases = makeCases(500, 0xc0ffee, agent.socket);
  const posted: string[] = [];
  const post = async (_s: string, path: string): Promise<AgentResult> => {
    posted.push(path);
    return { kind: 'ok', status: 200, body: { meshed: true, ok: true, ready: true } };
  };
  const kinds = new Map<string, number>();
  for (const [i, c] of cases.entries()) {
    const out = await runPlugin(c.env, c.stdin, { post });
    assert.equal(out.exitCode, 1, `case ${i} (${c.kind}) succeeded: ${c.stdin.toString('utf8').slice(0, 200)}`);
    const e = parseCniError(out.stdout);
    assert.ok([1, 2, 4, 5, 6, 7].includes(e.code), `case ${i} (${c.kind}): unexpected code ${e.code}: ${e.msg}`);
    assert.ok(e.code !== 102, `internal error on case ${i}: ${e.msg}`);
    kinds.set(c.kind.split('-')[0], (kinds.get(c.kind.split('-')[0]) ?? 0) + 1);
  }
  assert.deepEqual(posted.filter((p) => p === '/v1/cni/add'), [], 'no ADD reached the agent');
  assert.ok(kinds.size >= 6, `categories covered: ${[...kinds.keys()]}`);
});

test('100 malformed inputs through the real process (incl. 2 MiB and random bytes)', async () => {
  const cases = makeCases(98, 0xbadcafe, agent.socket);
  const huge = Buffer.alloc(2 * 1024 * 1024);
  for (let i = 0; i < huge.length; i++) huge[i] = (i * 2654435761) >>> 24;
  cases.push({ kind: 'huge-random', env: addEnv(), stdin: huge });
  cases.push({ kind: 'huge-json', env: addEnv(), stdin: Buffer.from(JSON.stringify(netConf(agent.socket, { pad: 'x'.repeat(2 * 1024 * 1024) }))) });
  const results: { c: Case; code: number | null; stdout: string; stderr: string }[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (next < cases.length) {
      const c = cases[next++];
      const r = await runCni(c.env, c.stdin);
      results.push({ c, ...r });
    }
  }));
  for (const r of results) {
    const what = `${r.c.kind}: stdout=${r.stdout.slice(0, 300)} stderr=${r.stderr.slice(0, 300)}`;
    assert.equal(r.code, 1, what);
    const e = parseCniError(r.stdout);
    assert.notEqual(e.code, 102, what);
    assert.doesNotMatch(r.stderr, /\n\s+at .+:\d+:\d+/, `stack trace: ${what}`);
  }
  assert.equal(agent.count('/v1/cni/add'), 0, 'no ADD reached the agent');
  const hugeErr = parseCniError(results.find((r) => r.c.kind === 'huge-json')!.stdout);
  assert.equal(hugeErr.code, 6);
});
