// SPDX-License-Identifier: Apache-2.0
// Running a meshwarp agent on a lab node: inside the node's netns and cgroup,
// like a DaemonSet pod with hostNetwork on a real node. Pins, socket and state
// live under the lab's prefix, so cleanupPrefix() removes them.
import type { ChildProcess } from 'node:child_process';
import { agentRequest } from '../agent/client.ts';
import { DEFAULTS } from '../agent/config.ts';
import { labPinRoot, labRunDir } from './cleanup.ts';
import { TIME_SCALE, waitForLine } from './proc.ts';
import type { LabNode } from './lab.ts';
import { BUNDLE, bundleProblem } from '../bundle.ts';
import { fromRoot } from '../paths.ts';

const CLI = fromRoot('src/cli/main.ts');

export interface LabAgentOptions {
  engine?: 'ebpf' | 'iptables';
  /** @deprecated old name of engine. */
  mode?: 'ebpf' | 'iptables';
  profile?: string;
  /** --dataplanes (default: the agent's, sidecar only). */
  dataplanes?: ('sidecar' | 'ambient')[];
  /** Extra agent flags. */
  args?: string[];
  /** Receives the agent's structured log lines. */
  onLog?: (line: string) => void;
  /** Run the CLI bundle (`make js`, src/bundle.ts) as the image does, not src/ (refused when stale). */
  bundle?: boolean;
}

export class LabAgent {
  readonly node: LabNode;
  readonly opts: LabAgentOptions;
  readonly pinRoot: string;
  readonly socket: string;
  readonly stateDir: string;
  process: ChildProcess | undefined;

  constructor(node: LabNode, opts: LabAgentOptions = {}) {
    this.node = node;
    this.opts = opts;
    this.pinRoot = `${labPinRoot(node.lab.prefix)}/${node.name}`;
    const run = `${labRunDir(node.lab.prefix)}/${node.name}`;
    this.socket = `${run}/agent.sock`;
    this.stateDir = `${run}/state`;
  }

  /** The agent's command-line flags (also what `meshwarp uninstall` needs). */
  flags(): string[] {
    return [
      '--engine', this.opts.engine ?? this.opts.mode ?? 'ebpf', '--profile', this.opts.profile ?? 'osm',
      '--cgroup', this.node.cgroupPath, '--pin-root', this.pinRoot, '--socket', this.socket,
      '--state-dir', this.stateDir, '--node-ip', this.node.ip4, '--node-ip', this.node.ip6,
      '--metrics', DEFAULTS.metrics, ...(this.opts.dataplanes ? ['--dataplanes', this.opts.dataplanes.join(',')] : []),
      ...(this.opts.args ?? []),
    ];
  }

  /** Starts the agent and waits until it serves its API. */
  async start(): Promise<void> {
    let cli = CLI;
    if (this.opts.bundle) {
      const why = bundleProblem();
      if (why) throw new Error(`agent on ${this.node.name}: ${why}`);
      cli = BUNDLE;
    }
    const p = this.node.spawn([process.execPath, '--disable-warning=ExperimentalWarning', cli, 'agent', ...this.flags()]);
    this.process = p;
    let log = '';
    p.stderr!.setEncoding('utf8');
    p.stderr!.on('data', (d: string) => {
      log += d;
      for (const l of d.split('\n')) if (l) this.opts.onLog?.(l);
    });
    try {
      await waitForLine(p, /^ready$/, 15_000);
    } catch (e) {
      throw new Error(`agent on ${this.node.name} did not start: ${(e as Error).message}\n${log.slice(-2000)}`);
    }
  }

  /** SIGKILL, as a crash or an OOM kill would. */
  async kill(): Promise<void> {
    await this.#signal('SIGKILL');
  }

  /** SIGTERM: the agent exits and leaves the datapath running. */
  async stop(): Promise<void> {
    await this.#signal('SIGTERM');
  }

  async #signal(sig: NodeJS.Signals): Promise<void> {
    const p = this.process;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill(sig);
    await exited;
    this.process = undefined;
  }

  request<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    return agentRequest<T>(method, path, body, this.socket, 10_000 * TIME_SCALE); // slow (emulated) kernels: MESHWARP_TIME_SCALE
  }
}
