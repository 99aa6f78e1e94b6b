// SPDX-License-Identifier: Apache-2.0
// The HBONE node proxy's process, started by the lab inside the node proxy's netns (and
// cgroup): opens its transparent listeners, serves its control socket, prints `ready`.
//   node main.ts --control <unix socket> [--outbound 15001] [--inbound 15006] [--hbone 15008]
// Control socket (HTTP, root only): PUT /v1/config <HboneConfig> → 200 once applied;
// GET /v1/stats → { counters, pool }; GET /v1/hops → the last HBONE hops of either side.
import { parseArgs } from 'node:util';
import { checkConfig } from './config.ts';
import { HboneProxy } from './proxy.ts';
import { serveControl } from '../control.ts';

const { values } = parseArgs({
  options: {
    control: { type: 'string' },
    outbound: { type: 'string', default: '15001' },
    inbound: { type: 'string', default: '15006' },
    hbone: { type: 'string', default: '15008' },
  },
});
if (!values.control) {
  process.stderr.write('usage: main.ts --control <socket> [--outbound P] [--inbound P] [--hbone P]\n');
  process.exit(2);
}
const control = values.control;
const proxy = new HboneProxy({ outbound: Number(values.outbound), inbound: Number(values.inbound), hbone: Number(values.hbone) });
await proxy.listen();

const srv = await serveControl(control, (method, url, body) => {
  if (method === 'PUT' && url === '/v1/config') {
    try {
      proxy.setConfig(checkConfig(JSON.parse(body)));
    } catch (e) {
      return [400, { error: (e as Error).message }];
    }
    return [200, { ok: true }];
  }
  if (method === 'GET' && url === '/v1/stats') return [200, proxy.stats()];
  if (method === 'GET' && url === '/v1/hops') return [200, proxy.hops];
  return [404, { error: 'PUT /v1/config, GET /v1/stats, GET /v1/hops' }];
});

const stop = () => {
  srv.close();
  void proxy.close().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdout.write('ready\n');
