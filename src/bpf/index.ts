// SPDX-License-Identifier: Apache-2.0
// The typed libbpf binding: import from here.
export { BpfObject, type Program, type OpenOptions } from './object.ts';
export { BpfMap, NotFoundError, MapFullError, ExistsError, MAP_TYPE, nPossibleCpus, type UpdateFlag } from './map.ts';
export { Link, TcFilter, attachSockmap, tcxPrograms, type Direction } from './link.ts';
export { RingBufferReader } from './ringbuf.ts';
export { Btf, type StructLayout } from './btf.ts';
export { BpfError } from './libbpf.ts';
export { checkLayout } from './layout.ts';
export * as codec from './codec.ts';
export { probeAttachType, probeHelper, probeLoad, probeProgType, probeMapType, type Answer, type LoadResult } from './probe.ts';
export { tcxQuery, ATTACH } from './sys.ts';
export { testRun, returnProgram, RawProgram, PROG_TYPE, type TestRunInput, type TestRunResult } from './testrun.ts';
