// SPDX-License-Identifier: Apache-2.0
// The node's addresses, followed as they change. Kubelet probes and other
// node-local traffic to pods come from whichever address the route picks —
// often the bridge gateway the first pod's ADD created after the agent
// started — so the set is re-read on every netlink address event.
import { spawn, type ChildProcess } from 'node:child_process';
import { addresses } from '../sys/links.ts';

/** Every global address of the caller's netns (the node's). */
export function nodeAddresses(): string[] {
  return addresses().filter((a) => a.scope !== 'host' && a.scope !== 'link').map((a) => a.local);
}

/** Does a chunk of `ip monitor address` output hold an address that is neither link nor host scope? */
export function changesGlobal(events: string): boolean {
  const scopes = [...events.matchAll(/ scope (\S+)/g)].map((m) => m[1]);
  return scopes.length === 0 || scopes.some((s) => s !== 'link' && s !== 'host');
}

/**
 * Calls `onChange(addresses)` whenever the netns's address set changes
 * (`ip monitor address` is RTM_NEWADDR/RTM_DELADDR from netlink). Returns a stop function.
 */
export function watchNodeAddresses(onChange: (ips: string[]) => void): () => void {
  let last = JSON.stringify(nodeAddresses().sort());
  let timer: NodeJS.Timeout | undefined;
  let child: ChildProcess | undefined;
  let stopped = false;
  const reread = () => {
    timer = undefined;
    const now = nodeAddresses().sort();
    if (JSON.stringify(now) === last) return;
    last = JSON.stringify(now);
    onChange(now);
  };
  const start = () => {
    child = spawn('ip', ['monitor', 'address'], { stdio: ['ignore', 'pipe', 'ignore'] });
    // Events come in bursts (an address and its routes): one re-read per burst. A link-local
    // address (every new pod veth's fe80::) cannot change the set: no re-read for it.
    child.stdout!.on('data', (chunk: Buffer) => { if (changesGlobal(chunk.toString())) timer ??= setTimeout(reread, 20); });
    child.on('exit', () => { if (!stopped) setTimeout(start, 1000).unref(); });
    child.unref();
    (child.stdout as unknown as { unref?: () => void }).unref?.();
  };
  start();
  return () => { stopped = true; clearTimeout(timer); child?.kill(); };
}
