// SPDX-License-Identifier: Apache-2.0
// Agent options: a bad value is a clear error naming the option, before anything changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateConfig, DEFAULTS } from '../../src/agent/config.ts';
import { parseAddRequest } from '../../src/agent/api.ts';
import { cgroup2Mount } from '../../src/sys/cgroup.ts';

test('defaults: ebpf, osm, the cgroup2 root discovered from mountinfo', () => {
  const c = validateConfig({});
  assert.equal(c.engine, 'ebpf');
  assert.equal(c.profile, 'osm');
  assert.equal(c.cgroupPath, cgroup2Mount());
  assert.equal(c.socket, DEFAULTS.socket);
  assert.deepEqual(c.dataplanes, ['sidecar']);
  assert.equal(c.ambientFailPolicy, 'closed');
});

test('dataplanes: sidecar and ambient, once each; the ambient failure policy closed or open', () => {
  assert.deepEqual(validateConfig({ dataplanes: ['sidecar', 'ambient', 'ambient'] }).dataplanes, ['sidecar', 'ambient']);
  assert.throws(() => validateConfig({ dataplanes: ['sidecar', 'sidecarless' as never] }), /--dataplanes: unknown dataplane "sidecarless"/);
  assert.throws(() => validateConfig({ dataplanes: [] }), /--dataplanes: at least one/);
  assert.equal(validateConfig({ ambientFailPolicy: 'open' }).ambientFailPolicy, 'open');
  assert.throws(() => validateConfig({ ambientFailPolicy: 'maybe' as never }), /--ambient-fail-policy: expected closed or open/);
});

test('bad options are errors that name the option', () => {
  // mode is the engine's old name: both spellings are checked, the error names the engine.
  assert.throws(() => validateConfig({ engine: 'nft' as never }), /unknown engine "nft" \(known: ebpf, iptables\)/);
  assert.throws(() => validateConfig({ mode: 'nft' }), /unknown engine "nft" \(known: ebpf, iptables\)/);
  assert.equal(validateConfig({ mode: 'iptables' }).engine, 'iptables');
  assert.throws(() => validateConfig({ mode: 'iptables', engine: 'ebpf' }), /--mode is the old name of --engine/);
  assert.throws(() => validateConfig({ profile: 'consul' }), /consul/);
  assert.throws(() => validateConfig({ pinRoot: 'relative/pins' }), /--pin-root: must be an absolute path/);
  assert.throws(() => validateConfig({ clusterDns: ['kube-dns'] }), /--cluster-dns: "kube-dns" is not an IP address/);
  assert.throws(() => validateConfig({ nodeIps: ['10.0.0.300'] }), /--node-ip: "10.0.0.300" is not an IP address/);
  assert.throws(() => validateConfig({ metrics: 'localhost' }), /--metrics: expected host:port/);
  assert.throws(() => validateConfig({ tc: 'fast' as never }), /--tc: expected auto, tcx or legacy/);
});

test('CNI ADD requests: validated completely, non-Kubernetes runtimes allowed', () => {
  const ok = { containerId: 'abc', netns: '/run/netns/x', ifName: 'eth0', podNamespace: '', podName: '', prevResult: { ips: [{ address: '10.0.0.2/24' }] } };
  assert.equal(parseAddRequest(ok).containerId, 'abc');
  assert.throws(() => parseAddRequest({ ...ok, containerId: '../etc' }), /containerId: "..\/etc" is not a container id/);
  assert.throws(() => parseAddRequest({ ...ok, ifName: 'a/b' }), /ifName/);
  assert.throws(() => parseAddRequest({ ...ok, prevResult: { ips: 'x' } }), /prevResult.ips: expected an array/);
  assert.equal(parseAddRequest({ ...ok, dnsServers: ['10.96.0.10'] }).dnsServers?.[0], '10.96.0.10');
  assert.throws(() => parseAddRequest({ ...ok, dnsServers: ['kube-dns'] }), /dnsServers: expected at most 8 IP addresses/);
  assert.throws(() => parseAddRequest({ ...ok, annotations: { a: 1 } }), /annotations.a: expected a string/);
  assert.throws(() => parseAddRequest([]), /expected a JSON object/);
});
