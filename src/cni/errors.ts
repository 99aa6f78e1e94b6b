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

// The same codes as strings for callers in JavaScript (Node's `err.code` convention);
// the spec's numbers stay on `cniCode` and in the JSON.
const CODE_NAMES: Record<number, string> = {
  1: 'ERR_CNI_INCOMPATIBLE_VERSION', 2: 'ERR_CNI_UNSUPPORTED_FIELD', 3: 'ERR_CNI_UNKNOWN_CONTAINER', 4: 'ERR_CNI_INVALID_ENV',
  5: 'ERR_CNI_IO_FAILURE', 6: 'ERR_CNI_DECODE_FAILURE', 7: 'ERR_CNI_INVALID_CONFIG', 11: 'ERR_CNI_TRY_AGAIN_LATER',
  50: 'ERR_CNI_NOT_AVAILABLE', 100: 'ERR_CNI_AGENT_REJECTED', 101: 'ERR_CNI_CHECK_FAILED', 102: 'ERR_CNI_INTERNAL',
};

/** The string code of a numeric CNI error code; 'ERR_CNI_OTHER' for codes meshwarp does not define. */
export function cniErrorCode(cniCode: number): string {
  return CODE_NAMES[cniCode] ?? 'ERR_CNI_OTHER';
}

export class CniError extends Error {
  /** e.g. 'ERR_CNI_INVALID_CONFIG' (cniErrorCode of cniCode). */
  readonly code: string;
  /** The spec's number, what the plugin prints. */
  readonly cniCode: number;
  readonly details: string;
  constructor(cniCode: number, msg: string, details = '') {
    super(msg);
    this.name = 'CniError';
    this.code = cniErrorCode(cniCode);
    this.cniCode = cniCode;
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
  const out: CniErrorJson = { cniVersion, code: e.cniCode, msg: e.message };
  if (e.details) out.details = e.details;
  return out;
}
