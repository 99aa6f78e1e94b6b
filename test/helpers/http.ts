// SPDX-License-Identifier: Apache-2.0
// HTTP between lab sandboxes: addresses as they appear in URLs, a Node server started in
// a pod, and curl run from another pod or node.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import type { Sandbox } from '../../src/lab/lab.ts';
import { waitForLine } from '../../src/lab/proc.ts';

/** host:port with an IPv6 address in brackets (as in URLs, and as src/proxy logs endpoints). */
export function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

export function url(ip: string, port: number): string {
  return `http://${hostPort(ip, port)}/`;
}

/** What a 'whoami' server answers: the peer address it saw, its uid, and its sandbox's name. */
export interface WhoAmI { remote: string; uid: number; name: string }

const REPLIES = {
  whoami: '(q,s)=>s.end(JSON.stringify({remote:q.socket.remoteAddress,uid:process.getuid(),name:process.env.POD}))',
  ok: `(q,s)=>s.end('ok')`,
};

/** Starts a Node HTTP server in `sb` on [::]:port (IPv4 and IPv6); resolves once it listens. */
export async function startServer(sb: Sandbox, opts: { port: number; reply: keyof typeof REPLIES; uid?: number }): Promise<ChildProcess> {
  const js = `require('node:http').createServer(${REPLIES[opts.reply]}).listen(${opts.port},'::',()=>console.log('listening'))`;
  const child = sb.spawn([process.execPath, '-e', js], { uid: opts.uid, env: { ...process.env, POD: sb.name } });
  await waitForLine(child, /^listening$/);
  return child;
}

/** curl http://ip:port/ from inside `from`; asserts that it succeeded and returns the body. */
export async function get(from: Sandbox, ip: string, opts: { port: number; uid?: number; maxTimeS?: number }): Promise<string> {
  const maxTimeS = opts.maxTimeS ?? 3;
  const r = await from.run(['curl', '-sS', '--max-time', String(maxTimeS), url(ip, opts.port)], { uid: opts.uid, timeoutMs: maxTimeS * 1000 + 2000 });
  assert.equal(r.code, 0, `curl ${from.name} -> ${url(ip, opts.port)}${opts.uid === undefined ? '' : ` (uid ${opts.uid})`}: ${r.stderr}`);
  return r.stdout;
}
