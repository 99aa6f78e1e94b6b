// SPDX-License-Identifier: Apache-2.0
// The HBONE lab proxy's pure parts: authorities, addresses, the snapshot check, and the lab CA's
// certificates (openssl): a SPIFFE URI SAN, issued by the root, usable for client and server auth.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LabCa, spiffeId } from '../../src/lab/hbone/ca.ts';
import { canonicalIp, checkConfig, hostPort, parseAuthority } from '../../src/lab/hbone/config.ts';
import { spiffeOf } from '../../src/lab/hbone/proxy.ts';

test('HBONE authority: ip:port and [v6]:port, nothing else', () => {
  assert.deepEqual(parseAuthority('10.244.2.3:8080'), { ip: '10.244.2.3', port: 8080 });
  assert.deepEqual(parseAuthority('[fd00:244:2:0::3]:80'), { ip: 'fd00:244:2::3', port: 80 });
  for (const bad of [undefined, '', '10.244.2.3', 'pipy:8080', 'fd00::3:80', '[fd00::3]', '10.244.2.3:0', '10.244.2.3:70000', '[10.0.0.1]:80', '300.1.1.1:80']) {
    assert.equal(parseAuthority(bad), null, String(bad));
  }
  assert.equal(hostPort('fd00::3', 15008), '[fd00::3]:15008');
  assert.equal(hostPort('10.0.0.1', 15008), '10.0.0.1:15008');
  assert.equal(canonicalIp('::ffff:10.0.0.1'), '10.0.0.1');
  assert.equal(canonicalIp('FD00:0244:0001:0000::0100'), 'fd00:244:1::100');
});

test('snapshot check names the bad field', () => {
  const ok = { node: 'n1', trustDomain: 'cluster.local', cluster: 'lab', ca: 'PEM', identities: [], workloads: [], nodes: [] };
  assert.deepEqual(checkConfig(ok), ok);
  assert.throws(() => checkConfig({ ...ok, node: '' }), /node: expected a string/);
  assert.throws(() => checkConfig({ ...ok, workloads: [{ name: 'a', namespace: 'default', serviceAccount: 'a', node: 'n1', ips: ['nope'], hbone: true }] }), /workloads\[0\]\.ips/);
  assert.throws(() => checkConfig({ ...ok, nodes: [{ name: 'n1', proxyIps: ['10.0.0.300'] }] }), /nodes\[0\]\.proxyIps/);
});

test('lab CA: workload certificates carry one SPIFFE URI SAN and chain to the root; another root does not sign them', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-hbone-ca-'));
  try {
    const ca = LabCa.create(join(dir, 'a'));
    const other = LabCa.create(join(dir, 'b'));
    const id = spiffeId('cluster.local', 'default', 'curl');
    const leaf = new X509Certificate(ca.issue(id).cert);
    assert.equal(spiffeOf(leaf), id);
    assert.ok(leaf.checkIssued(new X509Certificate(ca.certPem)));
    assert.ok(leaf.verify(new X509Certificate(ca.certPem).publicKey));
    assert.ok(!leaf.verify(new X509Certificate(other.certPem).publicKey));
    assert.equal(leaf.ca, false);
    assert.ok(new X509Certificate(ca.certPem).ca);
    assert.throws(() => ca.issue('spiffe://cluster.local/ns/default'), /not a SPIFFE workload id/);
    assert.throws(() => LabCa.create(join(dir, 'c'), 'Bad Domain'), /trust domain/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
