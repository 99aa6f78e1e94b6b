// SPDX-License-Identifier: Apache-2.0
// Pieces the Kubernetes tests with a lab node share: the API server reached
// from inside a node's netns, and mesh-injected pod shapes.
import { createConnection, createServer } from 'node:net';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type LabNode, waitForLine } from '../../src/lab/index.ts';

const BRIDGE = fileURLToPath(new URL('../kube/netns-bridge.ts', import.meta.url));

/** Makes host 127.0.0.1:`port` reachable as 127.0.0.1:`port` inside `node`'s netns (through a unix socket). */
export async function bridgeApi(node: LabNode, port: number, sock: string): Promise<() => void> {
  rmSync(sock, { force: true });
  const host = createServer((c) => { const u = createConnection(port, '127.0.0.1'); c.pipe(u).pipe(c); u.on('error', () => c.destroy()); c.on('error', () => u.destroy()); });
  await new Promise<void>((r) => host.listen(sock, r));
  const child = node.spawn([process.execPath, '--disable-warning=ExperimentalWarning', BRIDGE, String(port), sock]);
  await waitForLine(child, /^ready$/, 10_000);
  return () => { child.kill('SIGKILL'); host.close(); rmSync(sock, { force: true }); };
}

export const ISTIO_SHAPE = {
  annotations: { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' } as Record<string, string>,
  containers: [{ name: 'app', image: 'example.invalid/app:1' }, { name: 'istio-proxy', image: 'example.invalid/proxyv2:1', args: ['proxy', 'sidecar'] }],
};
export const PLAIN_SHAPE = { annotations: {} as Record<string, string>, containers: [{ name: 'app', image: 'example.invalid/app:1' }] };
export type PodShape = typeof ISTIO_SHAPE | typeof PLAIN_SHAPE;
