// SPDX-License-Identifier: Apache-2.0
// A connection that stays open across something (an upgrade): it sends half an
// HTTP request, waits until `flag` exists, sends the rest and reads the reply.
import type { Sandbox } from '../../src/lab/index.ts';

export interface HeldFlow { connected: () => boolean; reply: Promise<{ name: string; remote: string }>; kill: () => void }

export function heldFlow(sb: Sandbox, dst: string, port: number, flag: string, uid = 1000): HeldFlow {
  const code = `import socket,sys,os,time\ns=socket.create_connection((sys.argv[1],int(sys.argv[3])),timeout=60)\nprint('connected',flush=True)\n` +
    `s.sendall(b'GET / HTTP/1.0\\r\\nHost: x\\r\\n')\nwhile not os.path.exists(sys.argv[2]): time.sleep(0.02)\ns.sendall(b'\\r\\n')\n` +
    `d=b''\nwhile True:\n b=s.recv(4096)\n if not b: break\n d+=b\nprint(d.split(b'\\r\\n\\r\\n',1)[1].decode(),flush=True)\n`;
  const child = sb.spawn(['/usr/bin/python3', '-c', code, dst, flag, String(port)], { uid });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const reply = new Promise<{ name: string; remote: string }>((resolve, reject) => child.once('exit', () => {
    try { resolve(JSON.parse(out.split('\n')[1]) as { name: string; remote: string }); } catch { reject(new Error(`held flow: ${out} ${err}`)); }
  }));
  reply.catch(() => {});
  return { connected: () => out.startsWith('connected'), reply, kill: () => child.kill() };
}
