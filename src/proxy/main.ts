// SPDX-License-Identifier: Apache-2.0
// CLI for the test/lab sidecar: node src/proxy/main.ts --outbound 15001 --inbound 15003 [--host ::] [--log] [--tag NAME]
//   [--service VIP:PORT=IP:PORT,IP:PORT ...] [--dns-port 15053 --dns-name NAME=IP,IP ... [--dns-truncate NAME ...]]
//   [--dns-listen ADDR ... --dns-upstream IP ... --dns-transparent --dns-reuseport --dns-only]
// (--dns-truncate: that mesh name is answered over UDP with the TC bit only, to test TCP fallback;
// --dns-only: no TCP relay, the DNS proxy alone, as the lab's node proxy runs it (src/lab/node-proxy.ts))
// Prints "ready" once both listeners are up; exits 0 on SIGTERM/SIGINT.
import { parseArgs } from 'node:util';
import { parseService, startProxy } from './proxy.ts';
import { parseMeshName, startDnsProxy } from './dns.ts';

const { values } = parseArgs({
  options: {
    outbound: { type: 'string', default: '15001' },
    inbound: { type: 'string', default: '15003' },
    host: { type: 'string' },
    log: { type: 'boolean', default: false },
    tag: { type: 'string' },
    service: { type: 'string', multiple: true },
    'dns-port': { type: 'string' },
    'dns-name': { type: 'string', multiple: true },
    'dns-truncate': { type: 'string', multiple: true },
    'dns-listen': { type: 'string', multiple: true },
    'dns-upstream': { type: 'string', multiple: true },
    'dns-transparent': { type: 'boolean', default: false },
    'dns-only': { type: 'boolean', default: false },
    'dns-reuseport': { type: 'boolean', default: false },
  },
});
const port = (s: string) => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`bad port: ${s}`);
  return n;
};

const proxy = values['dns-only'] ? undefined : await startProxy({
  outbound: port(values.outbound), inbound: port(values.inbound), host: values.host, log: values.log, tag: values.tag,
  services: new Map((values.service ?? []).map(parseService)),
});
const dns = values['dns-port'] === undefined ? undefined : await startDnsProxy({
  port: port(values['dns-port']), names: (values['dns-name'] ?? []).map(parseMeshName), truncate: values['dns-truncate'], log: values.log, tag: values.tag,
  listen: values['dns-listen'], upstream: values['dns-upstream'], transparent: values['dns-transparent'], reusePort: values['dns-reuseport'],
});
process.stdout.write('ready\n');
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.once(sig, () => { Promise.all([proxy?.close(), dns?.close()]).then(() => process.exit(0), () => process.exit(1)); });
}
