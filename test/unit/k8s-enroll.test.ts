// SPDX-License-Identifier: Apache-2.0
// Enrollment per mesh on injected-pod shapes (the research table, docs/kubernetes.md).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { enrollment, injectedMesh, podKnobs, type Namespace, type Pod } from '../../src/k8s/enroll.ts';

const opts = { excludeNamespaces: ['kube-system'], self: { namespace: 'meshwarp', name: 'meshwarp-node-abc' } };
const pod = (o: { ns?: string; name?: string; labels?: Record<string, string>; annotations?: Record<string, string>; containers?: string[]; init?: string[]; hostNetwork?: boolean; phase?: string; proxyArgs?: string[] } = {}): Pod => ({
  metadata: { name: o.name ?? 'p', namespace: o.ns ?? 'app', uid: 'u1', labels: o.labels, annotations: o.annotations },
  spec: {
    hostNetwork: o.hostNetwork,
    containers: (o.containers ?? ['app']).map((name) => ({ name, args: name === 'istio-proxy' ? o.proxyArgs : undefined })),
    initContainers: (o.init ?? []).map((name) => ({ name })),
  },
  status: { phase: o.phase ?? 'Running' },
});
const ns = (labels: Record<string, string> = {}, annotations: Record<string, string> = {}): Namespace => ({ metadata: { name: 'app', uid: 'n1', labels, annotations } });

test('sidecar meshes are detected from what was injected', () => {
  assert.equal(injectedMesh(pod({ annotations: { 'sidecar.istio.io/status': '{}' }, containers: ['app', 'istio-proxy'] })), 'istio');
  assert.equal(injectedMesh(pod({ annotations: { 'sidecar.istio.io/status': '{}' }, init: ['istio-proxy'] })), 'istio', 'native sidecar (initContainers) counts');
  assert.equal(injectedMesh(pod({ containers: ['app', 'istio-proxy'] })), undefined, 'istio-proxy without sidecar.istio.io/status');
  assert.equal(injectedMesh(pod({ annotations: { 'sidecar.istio.io/status': '{}' }, containers: ['app'] })), undefined, 'status without istio-proxy');
  assert.equal(injectedMesh(pod({ annotations: { 'sidecar.istio.io/status': '{}' }, containers: ['istio-proxy'], proxyArgs: ['proxy', 'router'] })), undefined, 'a gateway is not a sidecar');
  assert.equal(injectedMesh(pod({ containers: ['app', 'linkerd-proxy'] })), 'linkerd');
  assert.equal(injectedMesh(pod({ init: ['linkerd-proxy'] })), 'linkerd');
  assert.equal(injectedMesh(pod({ annotations: { 'kuma.io/sidecar-injected': 'true' }, containers: ['app', 'kuma-sidecar'] })), 'kuma');
  assert.equal(injectedMesh(pod({ annotations: { 'kuma.io/sidecar-injected': 'false' }, containers: ['app', 'kuma-sidecar'] })), undefined);
  assert.equal(injectedMesh(pod({ labels: { 'osm-proxy-uuid': 'x' }, containers: ['app', 'envoy'] })), 'osm');
  assert.equal(injectedMesh(pod({ labels: { 'osm-proxy-uuid': 'x' }, containers: ['app', 'sidecar'] })), 'osm', 'osm-edge names it sidecar');
  assert.equal(injectedMesh(pod({ labels: { 'fsm-proxy-uuid': 'x' }, containers: ['app', 'sidecar'] })), 'fsm');
  assert.equal(injectedMesh(pod({ labels: { 'sidecar.istio.io/inject': 'true' } })), undefined, 'an admission-time label is not an injection');
});

test('ambient by the dataplane-mode label on pod or namespace; none opts out', () => {
  assert.deepEqual(enrollment(pod(), ns({ 'istio.io/dataplane-mode': 'ambient' }), opts), { enrolled: true, dataplane: 'ambient', profile: 'istio' });
  assert.deepEqual(enrollment(pod({ labels: { 'istio.io/dataplane-mode': 'ambient' } }), ns(), opts), { enrolled: true, dataplane: 'ambient', profile: 'istio' });
  assert.equal(enrollment(pod({ labels: { 'istio.io/dataplane-mode': 'none' } }), ns({ 'istio.io/dataplane-mode': 'ambient' }), opts).enrolled, false);
  assert.equal(enrollment(pod(), ns(), opts).enrolled, false);
  const sc = pod({ annotations: { 'sidecar.istio.io/status': '{}' }, containers: ['app', 'istio-proxy'] });
  assert.deepEqual(enrollment(sc, ns({ 'istio.io/dataplane-mode': 'ambient' }), opts), { enrolled: true, dataplane: 'sidecar', profile: 'istio' }, 'a sidecar pod stays sidecar');
});

test('never: hostNetwork, the agent itself, excluded namespaces, terminal pods', () => {
  const amb = ns({ 'istio.io/dataplane-mode': 'ambient' });
  const l = ['app', 'linkerd-proxy'];
  assert.match((enrollment(pod({ containers: l, hostNetwork: true }), amb, opts) as any).reason, /hostNetwork/);
  assert.match((enrollment(pod({ ns: 'meshwarp', name: 'meshwarp-node-abc', containers: l }), amb, opts) as any).reason, /own pod/);
  assert.match((enrollment(pod({ ns: 'kube-system', containers: l }), amb, opts) as any).reason, /excluded/);
  assert.match((enrollment(pod({ containers: l, phase: 'Succeeded' }), amb, opts) as any).reason, /terminal/);
  assert.equal(enrollment(pod({ containers: l }), amb, opts).enrolled, true);
});

test('per-pod knobs: the pod first, then linkerd config on the namespace; status annotations dropped', () => {
  const k = podKnobs(pod({ annotations: { 'config.linkerd.io/skip-outbound-ports': '25', 'meshwarp.io/redirection': 'enabled' } }),
    ns({}, { 'config.linkerd.io/skip-outbound-ports': '1', 'config.linkerd.io/skip-inbound-ports': '2', other: 'x' }));
  assert.deepEqual(k, { 'config.linkerd.io/skip-outbound-ports': '25', 'config.linkerd.io/skip-inbound-ports': '2' });
});
