// SPDX-License-Identifier: Apache-2.0
// haproxy configurations of the benchmark: the app server (HTTP, fixed "ok")
// and the sidecar (TCP relay), transparent or explicit.
//
// Every haproxy runs one thread: on a 2-core machine the client, two sidecars
// and the server already outnumber the cores, and one thread each keeps the
// modes comparable (the same proxy work in every mode that has one).

const GLOBAL = `global
  nbthread 1
  maxconn 8192
`;

const TCP_DEFAULTS = `defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
`;

/**
 * The app: answers every request with a fixed "ok"; /whoami answers with the
 * address the request came from (the readiness check uses it to prove which
 * path the traffic took).
 */
export function appServerConfig(port: number): string {
  return `${GLOBAL}defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
frontend app
  bind 0.0.0.0:${port}
  http-request return status 200 content-type text/plain lf-string "%[src]" if { path /whoami }
  http-request return status 200 content-type text/plain string "ok"
`;
}

/**
 * The transparent sidecar of the iptables and ebpf modes: outbound and inbound
 * listeners forward to the original destination (`server 0.0.0.0:0` makes
 * haproxy read SO_ORIGINAL_DST). IPv4 listeners: haproxy 2.6 asks
 * SO_ORIGINAL_DST only on AF_INET sockets (see test/conformance/haproxy.test.ts).
 */
export function transparentSidecarConfig(outboundPort: number, inboundPort: number): string {
  return `${GLOBAL}${TCP_DEFAULTS}listen outbound
  bind 0.0.0.0:${outboundPort}
  server orig 0.0.0.0:0
listen inbound
  bind 0.0.0.0:${inboundPort}
  server orig 0.0.0.0:0
`;
}

/** One explicit relay: listen on `bind`, forward to `to` (host:port). */
export interface Relay { name: string; bind: string; to: string }

/** The sidecar of the direct+sidecar mode: fixed relays, nothing intercepted. */
export function explicitSidecarConfig(relays: Relay[]): string {
  return GLOBAL + TCP_DEFAULTS + relays.map((r) => `listen ${r.name}
  bind ${r.bind}
  server s ${r.to}
`).join('');
}
