// SPDX-License-Identifier: Apache-2.0
// Pure pieces of the CNI plugin and installer: CNI_ARGS, env rules, settings defaults,
// skip decisions, conflist edits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCniArgs, parseEnv, parseMeshwarpSettings, parseNetConf, skipReason, validAttachments } from '../../src/cni/config.ts';
import { CniError } from '../../src/cni/errors.ts';
import {
  candidateNames, confToConflist, conflistNameFor, jsonEqual, parseConfFile, pluginEntry, unsupportedVersion, withEntry, withoutEntry,
} from '../../src/cni/conflist.ts';

const code = (fn: () => unknown): number => {
  try {
    fn();
  } catch (e) {
    if (e instanceof CniError) return e.cniCode;
    throw e;
  }
  return 0;
};

test('CNI_ARGS: pairs, empty parts, values containing "="', () => {
  assert.deepEqual([...parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=a=b;;X=')], [['IgnoreUnknown', '1'], ['K8S_POD_NAME', 'a=b'], ['X', '']]);
  assert.equal(parseCniArgs('').size, 0);
  assert.equal(code(() => parseCniArgs('A')), 4);
  assert.equal(code(() => parseCniArgs('=v')), 4);
});

test('env: what each command requires', () => {
  assert.equal(code(() => parseEnv({}, 'DEL')), 4);
  assert.equal(code(() => parseEnv({ CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0' }, 'DEL')), 0);
  assert.equal(code(() => parseEnv({ CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0' }, 'ADD')), 4);
  assert.equal(code(() => parseEnv({}, 'STATUS')), 0);
  assert.equal(code(() => parseEnv({}, 'GC')), 0);
  assert.equal(code(() => parseEnv({ CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0123456789ab', CNI_NETNS: '/n' }, 'ADD')), 0);
  assert.equal(code(() => parseEnv({ CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0123456789abc', CNI_NETNS: '/n' }, 'ADD')), 4);
});

test('settings: defaults, and unknown keys are refused', () => {
  assert.deepEqual(parseMeshwarpSettings(undefined), { socket: '/run/meshwarp/agent.sock', failurePolicy: 'closed', excludeNamespaces: ['kube-system'], timeoutMs: 5000 });
  assert.equal(parseMeshwarpSettings({ failurePolicy: 'open' }).failurePolicy, 'open');
  assert.equal(code(() => parseMeshwarpSettings({ sokcet: '/x' })), 2);
  assert.equal(code(() => parseMeshwarpSettings({ socket: `/${'a'.repeat(107)}` })), 7);
});

test('skip decisions', () => {
  const conf = parseNetConf({ cniVersion: '1.0.0', name: 'n', type: 'meshwarp-cni' });
  assert.equal(skipReason(conf, { namespace: 'kube-system', name: 'x', infraContainerId: '' }), 'namespace kube-system is excluded');
  assert.equal(skipReason(conf, { namespace: 'default', name: 'x', infraContainerId: '' }), undefined);
  assert.equal(skipReason(conf, { namespace: '', name: '', infraContainerId: '' }), undefined, 'non-Kubernetes runtimes: the agent decides');
  const rc = parseNetConf({ cniVersion: '1.0.0', name: 'n', type: 'meshwarp-cni', runtimeConfig: { meshwarp: { skip: true } } });
  assert.equal(skipReason(rc, { namespace: 'default', name: 'x', infraContainerId: '' }), 'runtimeConfig.meshwarp.skip');
});

test('GC attachments: both key spellings, strict shape', () => {
  assert.deepEqual(validAttachments({ 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'eth0' }] }), [{ containerId: 'a', ifName: 'eth0' }]);
  assert.deepEqual(validAttachments({ 'cni.dev/attachments': [] }), []);
  assert.equal(code(() => validAttachments({})), 7);
  assert.equal(code(() => validAttachments({ 'cni.dev/valid-attachments': {} })), 7);
});

test('conflist helpers: order, conversion, idempotent insert, removal', () => {
  assert.deepEqual(candidateNames(['b.conflist', 'a.json', 'README', '10-x.conf', 'Z.conf', '10-x.conflist', '.hidden.tmp']),
    ['10-x.conf', '10-x.conflist', 'Z.conf', 'a.json', 'b.conflist']);
  assert.equal(conflistNameFor('10-bridge.conf'), '10-bridge.conflist');
  assert.equal(conflistNameFor('10-bridge.json'), '10-bridge.conflist');
  const conf = { cniVersion: '1.0.0', name: 'lab', type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local' } };
  const list = confToConflist(conf);
  assert.deepEqual(list, { cniVersion: '1.0.0', name: 'lab', plugins: [{ type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local' } }] });
  const entry = pluginEntry({ failurePolicy: 'open' });
  const once = withEntry(list, entry);
  const twice = withEntry(once, entry);
  assert.deepEqual(once, twice);
  assert.equal((twice.plugins as unknown[]).length, 2);
  const changed = withEntry(once, pluginEntry({ failurePolicy: 'closed' }));
  assert.deepEqual((changed.plugins as { meshwarp?: unknown }[])[1].meshwarp, { failurePolicy: 'closed' });
  assert.deepEqual(withoutEntry(changed), list);
  assert.equal(unsupportedVersion({ cniVersion: '1.0.0' }), undefined);
  assert.match(unsupportedVersion({ cniVersion: '0.4.0' }) ?? '', /0\.4\.0/);
  assert.match(unsupportedVersion({ cniVersion: '1.1.0', cniVersions: ['0.3.1', '1.1.0'] }) ?? '', /0\.3\.1/);
  assert.equal(parseConfFile('a.conflist', '{"plugins": []}').kind, 'invalid');
  assert.equal(parseConfFile('a.conf', '{"name": "x"}').kind, 'invalid');
  assert.ok(jsonEqual({ a: [1, { b: 2 }], c: null }, { c: null, a: [1, { b: 2 }] }));
  assert.ok(!jsonEqual({ a: 1 }, { a: 1, b: undefined }));
});
