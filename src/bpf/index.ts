// SPDX-License-Identifier: Apache-2.0
// The typed libbpf binding: import from here.
export { BpfObject, type Program, type OpenOptions } from './object.ts';
export { BpfMap, NotFoundError, MapFullError, ExistsError, nPossibleCpus, type UpdateFlag } from './map.ts';
export { Link, MapProgAttachment, TcFilter, tcxPrograms, type Direction } from './link.ts';
export { RingBufferReader } from './ringbuf.ts';
export { Btf, type StructLayout } from './btf.ts';
export { BpfError, type BpfErrorCode } from './libbpf.ts';
export { checkLayout } from './layout.ts';
export * as codec from './codec.ts';
export { testRun, returnProgram, RawProgram, type TestRunInput, type TestRunResult } from './testrun.ts';
export {
  FEATURES, feature, have, haveTcx, kernelAtLeast, parseKernelVersion, UnsupportedFeatureError,
  type Feature, type FeatureId, type FeatureResult,
} from './features.ts';
export * from './uapi.ts';
