// SPDX-License-Identifier: Apache-2.0
// CNI error codes (spec 1.0/1.1 "Error" section) and the error type every plugin path
// turns into the `{cniVersion, code, msg, details}` JSON on stdout.

export const CniCode = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnv: 4,
  ioFailure: 5,
  decodeFailure: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  /** STATUS only: the plugin cannot serve ADD. */
  notAvailable: 50,
  // 100+: meshwarp-specific.
  agentRejected: 100,
  checkFailed: 101,
  internal: 102,
} as const;

export class CniError extends Error {
  readonly code: number;
  readonly details: string;
  constructor(code: number, msg: string, details = '') {
    super(msg);
    this.code = code;
    this.details = details;
  }
}

export interface CniErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export function errorJson(cniVersion: string, e: CniError): CniErrorJson {
  const out: CniErrorJson = { cniVersion, code: e.code, msg: e.message };
  if (e.details) out.details = e.details;
  return out;
}
