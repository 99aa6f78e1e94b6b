// SPDX-License-Identifier: Apache-2.0
// The agent's structured log: one JSON object per line on stderr.
export function log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);
}
