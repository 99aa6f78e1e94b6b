// SPDX-License-Identifier: Apache-2.0
// meshwarp-cni entry point: what the container runtime executes. Reads CNI_* from the
// environment and the network configuration from stdin (at most 1 MiB), prints the
// result or a CNI error JSON on stdout, structured log lines on stderr, and exits 0 or 1.
// Node builtins and src/cni only: this file must be bundleable into one executable.
import { CniCode, CniError } from './errors.ts';
import { errorOutput, runPlugin, stderrText, type PluginDeps, type PluginOutput } from './plugin.ts';

export const MAX_STDIN_BYTES = 1024 * 1024;

/** Reads stdin up to `limit` bytes; stops reading (without buffering the rest) once over it. */
export function readStdinBounded(limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let stdin: NodeJS.ReadStream;
    try {
      stdin = process.stdin;
    } catch (e) {
      reject(new CniError(CniCode.ioFailure, `failed to read network configuration from stdin: ${e instanceof Error ? e.message : String(e)}`));
      return;
    }
    const onData = (c: Buffer): void => {
      size += c.length;
      if (size > limit) {
        stdin.off('data', onData);
        stdin.pause();
        stdin.destroy();
        reject(new CniError(CniCode.decodeFailure, `failed to decode network configuration: stdin larger than ${limit} bytes`,
          'a CNI network configuration is a few KiB; something is feeding the plugin the wrong input'));
        return;
      }
      chunks.push(c);
    };
    stdin.on('data', onData);
    stdin.once('end', () => resolve(Buffer.concat(chunks)));
    stdin.once('error', (e) => reject(new CniError(CniCode.ioFailure, `failed to read network configuration from stdin: ${e.message}`)));
  });
}

let emitted = false;

function emit(out: PluginOutput): void {
  if (emitted) {
    process.exit(1); // a failure while writing the answer: nothing more can be said
  }
  emitted = true;
  const err = stderrText(out.logs);
  if (err) process.stderr.write(err);
  // stdout/stderr on pipes and files are synchronous on Linux; exit once the write is accepted.
  process.stdout.write(out.stdout, () => process.exit(out.exitCode));
}

function fail(e: unknown): void {
  const err = e instanceof CniError ? e
    : new CniError(CniCode.internal, `internal error in meshwarp-cni: ${e instanceof Error ? e.message : String(e)}`);
  emit(errorOutput(err));
}

async function main(): Promise<void> {
  process.on('uncaughtException', fail);
  process.on('unhandledRejection', fail);
  let stdin: Buffer;
  try {
    stdin = await readStdinBounded(MAX_STDIN_BYTES);
  } catch (e) {
    fail(e);
    return;
  }
  // The static forwarder (forward.c) sets this when the agent took the request but did not
  // answer within timeoutMs: the agent counts as unavailable at once, the policy applies.
  const unavailable = process.env.MESHWARP_CNI_AGENT_UNAVAILABLE;
  const deps: PluginDeps | undefined = unavailable ? { post: async () => ({ kind: 'unavailable', reason: unavailable }) } : undefined;
  emit(await runPlugin(process.env, stdin, deps));
}

// A single-executable build (scripts/build-cni.sh) snapshots this module at build time: the
// work above is then done once, and the snapshot's main function is the only thing left at start.
const v8 = process.getBuiltinModule('node:v8') as typeof import('node:v8');
if (v8.startupSnapshot.isBuildingSnapshot()) v8.startupSnapshot.setDeserializeMainFunction(() => void main().catch(fail));
else void main().catch(fail);
