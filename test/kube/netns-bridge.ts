// SPDX-License-Identifier: Apache-2.0
// Runs inside a lab node's netns: 127.0.0.1:<port> there → the unix socket <path>
// (whose other end, in the host netns, connects to the host's 127.0.0.1:<port>).
import { createConnection, createServer } from 'node:net';

const [port, sock] = process.argv.slice(2);
createServer((c) => {
  const u = createConnection(sock);
  c.pipe(u).pipe(c);
  u.on('error', () => c.destroy());
  c.on('error', () => u.destroy());
}).listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\n'));
