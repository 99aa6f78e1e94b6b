// SPDX-License-Identifier: Apache-2.0
// One error type for every bad profile, annotation, override or address, so callers
// (agent, CNI, CLI) catch a single class and can show `field` next to the message.

export class PolicyError extends Error {
  readonly code = 'ERR_INVALID_POLICY';
  /** The annotation key, option name or parameter that was wrong. */
  readonly field: string;
  /** The offending input as given, when there is one. */
  readonly value: unknown;
  constructor(field: string, reason: string, value?: unknown) {
    super(value === undefined ? `${field}: ${reason}` : `${field}: ${show(value)}: ${reason}`);
    this.name = 'PolicyError';
    this.field = field;
    this.value = value;
  }
}

/** Quotes user input so empty strings and whitespace stay visible in messages. */
export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
