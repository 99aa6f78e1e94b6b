// SPDX-License-Identifier: Apache-2.0
// Faults a real kube-apiserver does not produce on demand, from a small fake on
// 127.0.0.1 (beside the real-server tests in api.test.ts, never instead): a
// half-open watch that goes silent, a garbled stream, an in-stream 410 while
// the watch cache is on, bookmarks, 500s on list. Checked: what the informer
// asks for (resourceVersion=0 first, "" after a 410, the bookmark's version,
// allowWatchBookmarks) and that it never stops.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { KubeClient } from '../../src/k8s/client.ts';
import { Informer, type KubeObject } from '../../src/k8s/informer.ts';
import { waitUntil } from '../helpers/poll.ts';

const obj = (name: string, rv: string): KubeObject => ({ metadata: { name, namespace: 'ns', uid: `u-${name}`, resourceVersion: rv } });

test('fake API server: silence, garbage, in-stream 410, bookmarks and 500s — the informer recovers from each', { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-fake-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'k', '-out', 'c', '-days', '1', '-subj', '/CN=fake', '-addext', 'subjectAltName=IP:127.0.0.1'], { cwd: dir, stdio: 'ignore' });
  const requests: URL[] = [];
  // What each successive request gets: the script of faults.
  const script: ((res: ServerResponse, u: URL) => void)[] = [
    (res) => { res.writeHead(500).end('{"kind":"Status","code":500,"reason":"InternalError"}'); }, // list fails: backoff, retry with RV=0
    (res) => json(res, { metadata: { resourceVersion: '10' }, items: [obj('a', '9'), obj('b', '10')] }), // list
    (res) => { res.writeHead(200, { 'content-type': 'application/json' }); res.flushHeaders(); }, // watch: half-open silence
    (res) => { stream(res, [{ type: 'BOOKMARK', object: { metadata: { resourceVersion: '20' } } }]); res.end(); }, // bookmark then clean end
    (res) => { res.writeHead(200, { 'content-type': 'application/json' }); res.end('not json\n'); }, // garbage
    (res) => { stream(res, [{ type: 'ADDED', object: obj('c', '21') }, { type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired', message: 'too old resource version: 20 (25)' } }]); res.end(); },
    (res) => json(res, { metadata: { resourceVersion: '30' }, items: [obj('a', '9'), obj('c', '21')] }), // relist: b vanished
  ];
  const server = createServer({ key: readFileSync(join(dir, 'k')), cert: readFileSync(join(dir, 'c')) }, (req, res) => {
    const u = new URL(req.url!, 'https://x');
    requests.push(u);
    const step = script[requests.length - 1];
    if (step) step(res, u);
    else { res.writeHead(200, { 'content-type': 'application/json' }); res.flushHeaders(); } // then: a quiet healthy watch
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => { server.closeAllConnections(); server.close(); });
  const port = (server.address() as { port: number }).port;
  const client = new KubeClient({ server: `https://127.0.0.1:${port}`, ca: readFileSync(join(dir, 'c')) });
  t.after(() => client.close());
  const seen: string[] = [];
  const inf = new Informer(client, { path: '/api/v1/pods', fieldSelector: 'spec.nodeName=n', backoffBaseMs: 20, backoffCapMs: 100, idleMs: 300 }, {
    add: (o) => seen.push(`add ${o.metadata.name}`), delete: (o) => seen.push(`delete ${o.metadata.name}`),
  });
  t.after(() => inf.stop());
  inf.start();
  await waitUntil('the whole script played', () => requests.length > script.length, 20_000);
  const q = requests.map((u) => Object.fromEntries(u.searchParams));
  assert.equal(q[0].resourceVersion, '0', 'first list from the watch cache');
  assert.equal(q[1].resourceVersion, '0', 'a failed first list is retried from the watch cache');
  for (const i of [2, 3, 4, 5]) {
    assert.equal(q[i].watch, '1');
    assert.equal(q[i].allowWatchBookmarks, 'true');
    assert.equal(q[i].fieldSelector, 'spec.nodeName=n');
  }
  assert.equal(q[2].resourceVersion, '10', 'watch from the list');
  assert.equal(q[3].resourceVersion, '10', 'after silence, watch again from the same version');
  assert.equal(q[4].resourceVersion, '20', 'the bookmark moved the version');
  assert.equal(q[6].resourceVersion, undefined, 'after a 410, relist with "" (a quorum read)');
  assert.equal(q[7].resourceVersion, '30');
  assert.deepEqual(seen, ['add a', 'add b', 'add c', 'delete b'], 'the relist diff fired the delete of what vanished');
  assert.deepEqual(inf.list().map((o) => o.metadata.name).sort(), ['a', 'c']);
  assert.equal(inf.counters.relists, 1, 'the 410 relist (the retried failed first list does not count)');
  assert.ok(inf.counters.failures >= 3, `500, silence, garbage: ${JSON.stringify(inf.counters)}`);
});

function json(res: ServerResponse, body: unknown): void {
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}
function stream(res: ServerResponse, events: unknown[]): void {
  res.writeHead(200, { 'content-type': 'application/json' });
  for (const e of events) res.write(`${JSON.stringify(e)}\n`);
}
