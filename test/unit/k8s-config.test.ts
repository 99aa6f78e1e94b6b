// SPDX-License-Identifier: Apache-2.0
// The agent's Kubernetes settings: node name from the downward API only, JSON kubeconfig.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { kubeConfigOf } from '../../src/cli/agent.ts';
import { inClusterConfig, KubeError, loadKubeconfig } from '../../src/k8s/client.ts';

test('the node name comes from --node-name or NODE_NAME, never the hostname', () => {
  assert.throws(() => kubeConfigOf({}, {}), /NODE_NAME/);
  assert.equal(kubeConfigOf({}, { NODE_NAME: 'n1' }).nodeName, 'n1');
  assert.equal(kubeConfigOf({ 'node-name': 'n2' }, { NODE_NAME: 'n1' }).nodeName, 'n2');
  assert.deepEqual(kubeConfigOf({}, { NODE_NAME: 'n' }).excludeNamespaces, ['kube-system']);
  assert.deepEqual(kubeConfigOf({ 'exclude-namespaces': 'a, b,' }, { NODE_NAME: 'n' }).excludeNamespaces, ['a', 'b']);
  assert.deepEqual(kubeConfigOf({}, { NODE_NAME: 'n', POD_NAMESPACE: 'mw', POD_NAME: 'mw-node-x' }).self, { namespace: 'mw', name: 'mw-node-x' });
});

test('kubeconfig: JSON, current context; YAML refused with the way out', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-kc-'));
  try {
    const p = join(dir, 'kc');
    writeFileSync(p, JSON.stringify({
      'current-context': 'b',
      contexts: [{ name: 'a', context: { cluster: 'x', user: 'u' } }, { name: 'b', context: { cluster: 'y', user: 'u' } }],
      clusters: [{ name: 'x', cluster: { server: 'https://x:1' } }, { name: 'y', cluster: { server: 'https://y:2', 'certificate-authority-data': Buffer.from('CA').toString('base64') } }],
      users: [{ name: 'u', user: { token: 't' } }],
    }));
    const c = loadKubeconfig(p);
    assert.equal(c.server, 'https://y:2');
    assert.equal(c.ca?.toString(), 'CA');
    assert.equal(c.token, 't');
    writeFileSync(p, 'apiVersion: v1\nkind: Config\n');
    assert.throws(() => loadKubeconfig(p), /must be JSON/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.throws(() => inClusterConfig({}), /KUBERNETES_SERVICE_HOST/);
});

test('a Status body becomes a KubeError with status and reason', () => {
  const e = KubeError.fromBody(410, JSON.stringify({ kind: 'Status', reason: 'Expired', message: 'too old resource version' }));
  assert.equal(e.status, 410);
  assert.equal(e.reason, 'Expired');
  assert.match(e.message, /too old/);
  assert.equal(KubeError.fromBody(502, '<html>').reason, 'Unknown');
});

test('src/k8s is a leaf that src/cni never imports (the plugin gets no Kubernetes credentials)', () => {
  const src = join(import.meta.dirname, '../../src');
  for (const f of readdirSync(join(src, 'cni'), { recursive: true }) as string[]) {
    if (!f.endsWith('.ts')) continue;
    assert.doesNotMatch(readFileSync(join(src, 'cni', f), 'utf8'), /from ['"][^'"]*\/k8s\//, `src/cni/${f} imports src/k8s`);
  }
  for (const f of readdirSync(join(src, 'k8s')) as string[]) {
    const imports = [...readFileSync(join(src, 'k8s', f), 'utf8').matchAll(/from '([^']+)'/g)].map((m) => m[1]);
    assert.deepEqual(imports.filter((i) => i.startsWith('.') && !i.startsWith('./')), [], `src/k8s/${f} imports outside src/k8s`);
  }
});
