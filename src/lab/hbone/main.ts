// SPDX-License-Identifier: Apache-2.0
// The HBONE node proxy's process, started by the lab inside the node proxy's netns (and
// cgroup): opens its transparent listeners, serves its control socket, prints `ready`.
//   node main.ts --control <unix socket> [--outbound 15001] [--inbound 15006] [--hbone 15008]
// Control socket (HTTP, root only): PUT /v1/config <HboneConfig> → 200 once applied;
// GET /v1/stats → { counters, pool }; GET /v1/hops → the last HBONE hops of either side.
import { chmodSync, rmSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { checkConfig } from './config.ts';
import { HboneProxy } from './proxy.ts';

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

const srv = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (d: string) => (body += d));
  req.on('end', () => {
    const reply = (code: number, msg: unknown) => { res.writeHead(code, { 'content-type': 'application/json' }); res.end(JSON.stringify(msg)); };
    if (req.method === 'PUT' && req.url === '/v1/config') {
      try {
        proxy.setConfig(checkConfig(JSON.parse(body)));
      } catch (e) {
        return reply(400, { error: (e as Error).message });
      }
      return reply(200, { ok: true });
    }
    if (req.method === 'GET' && req.url === '/v1/stats') return reply(200, proxy.stats());
    if (req.method === 'GET' && req.url === '/v1/hops') return reply(200, proxy.hops);
    reply(404, { error: 'PUT /v1/config, GET /v1/stats, GET /v1/hops' });
  });
});
rmSync(control, { force: true });
await new Promise<void>((resolve, reject) => { srv.once('error', reject); srv.listen(control, resolve); });
chmodSync(control, 0o600);

const stop = () => {
  srv.close();
  void proxy.close().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdout.write('ready\n');
