// SPDX-License-Identifier: Apache-2.0
// meshwarp command line: one module per command under src/cli/, loaded on demand
// so `meshwarp doctor` does not pay for the lab or the agent.
const COMMANDS: Record<string, { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> }> = {
  demo: { summary: 'the two-node demo in a lab: curl -> pipy-ok v1/v2 through sidecars, with the trace', load: () => import('./demo.ts') },
  lab: { summary: 'run a command in a lab pod, or destroy a lab left behind', load: () => import('./lab.ts') },
  doctor: { summary: 'check this machine for every feature meshwarp needs', load: () => import('./doctor.ts') },
  agent: { summary: 'run the node agent (datapath owner, CNI and CLI API)', load: () => import('./agent.ts') },
  status: { summary: 'mode, attachments, map usage and counters of the running agent', load: () => import('./status.ts') },
  pods: { summary: 'pods meshed by the running agent', load: () => import('./pods.ts') },
  cni: { summary: 'install or remove the meshwarp CNI plugin in the node\'s CNI config', load: () => import('./cni.ts') },
  trace: { summary: 'stream the datapath\'s decisions (pod, verdict, original -> new address)', load: () => import('./trace.ts') },
  uninstall: { summary: 'remove everything meshwarp made on this node', load: () => import('./uninstall.ts') },
  bench: { summary: 'A/B benchmark on a lab: direct, direct+sidecar, iptables, ebpf (ratios, table, SVG chart)', load: () => import('./bench.ts') },
};

function usage(): string {
  const w = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return `usage: meshwarp <command> [options]\n\ncommands:\n${Object.entries(COMMANDS)
    .map(([n, c]) => `  ${n.padEnd(w)}  ${c.summary}`).join('\n')}\n\nRun \`meshwarp <command> --help\` for a command's options.\n`;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(usage());
    return cmd ? 0 : 2;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    process.stderr.write(`meshwarp: unknown command "${cmd}"\n\n${usage()}`);
    return 2;
  }
  return (await c.load()).run(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    process.stderr.write(`meshwarp: ${e instanceof Error ? e.message : String(e)}\n`);
    if (process.env.MESHWARP_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    process.exitCode = 1;
  },
);
