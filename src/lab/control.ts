// SPDX-License-Identifier: Apache-2.0
// The control socket of the lab's node proxies (the haproxy one and the HBONE one): JSON
// over HTTP on a unix socket only root can reach. A handler that throws answers 500.
import http from 'node:http';
import { chmodSync, rmSync } from 'node:fs';

export type ControlHandler = (method: string, url: string, body: string) => [number, unknown] | Promise<[number, unknown]>;

export async function serveControl(socket: string, handle: ControlHandler): Promise<http.Server> {
  rmSync(socket, { force: true });
  const srv = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      const reply = ([code, msg]: [number, unknown]) => { res.writeHead(code, { 'content-type': 'application/json' }); res.end(JSON.stringify(msg)); };
      Promise.resolve().then(() => handle(req.method ?? '', req.url ?? '', body))
        .then(reply, (e: Error) => reply([500, { error: e.message }]));
    });
  });
  await new Promise<void>((resolve, reject) => { srv.once('error', reject); srv.listen(socket, resolve); });
  chmodSync(socket, 0o600);
  return srv;
}
