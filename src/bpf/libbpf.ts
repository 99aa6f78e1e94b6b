// SPDX-License-Identifier: Apache-2.0
// Raw libbpf 1.1 entry points through koffi. Nothing outside src/bpf/ imports
// this file: the typed layer (object.ts, map.ts, link.ts, ringbuf.ts, btf.ts)
// wraps every call and turns negative returns into BpfError.
import koffi from 'koffi';
import { strerror, vsnprintf } from '../sys/libc.ts';
import { ERRNO } from './uapi.ts';

const lib = koffi.load('libbpf.so.1');

// Opaque handles. Pointers to them come back as koffi external values.
koffi.opaque('bpf_object');
koffi.opaque('bpf_program');
koffi.opaque('bpf_map');
koffi.opaque('btf');
koffi.opaque('ring_buffer');

/** struct bpf_object_open_opts (libbpf 1.1): `sz` must hold sizeof. */
export const ObjectOpenOpts = koffi.struct('bpf_object_open_opts', {
  sz: 'size_t',
  object_name: 'const char *',
  relaxed_maps: 'bool',
  pin_root_path: 'const char *',
  _stub: 'uint32_t', // `__u32 :32` where attach_prog_fd used to be
  kconfig: 'const char *',
  btf_custom_path: 'const char *',
  kernel_log_buf: 'void *',
  kernel_log_size: 'size_t',
  kernel_log_level: 'uint32_t',
});

export const TcHook = koffi.struct('bpf_tc_hook', {
  sz: 'size_t',
  ifindex: 'int',
  attach_point: 'int',
  parent: 'uint32_t',
});

export const TcOpts = koffi.struct('bpf_tc_opts', {
  sz: 'size_t',
  prog_fd: 'int',
  flags: 'uint32_t',
  prog_id: 'uint32_t',
  handle: 'uint32_t',
  priority: 'uint32_t',
});

/** struct bpf_test_run_opts (libbpf 1.1, BPF_PROG_TEST_RUN): `sz` must hold sizeof. */
export const TestRunOpts = koffi.struct('bpf_test_run_opts', {
  sz: 'size_t',
  data_in: 'void *',
  data_out: 'void *',
  data_size_in: 'uint32_t',
  data_size_out: 'uint32_t',
  ctx_in: 'void *',
  ctx_out: 'void *',
  ctx_size_in: 'uint32_t',
  ctx_size_out: 'uint32_t',
  retval: 'uint32_t',
  repeat: 'int',
  duration: 'uint32_t',
  flags: 'uint32_t',
  cpu: 'uint32_t',
  batch_size: 'uint32_t',
});

export const RingBufferSampleFn = koffi.proto('int ring_buffer_sample_fn(void *ctx, void *data, size_t size)');
const PrintFn = koffi.proto('int libbpf_print_fn(int level, const char *fmt, void *ap)');

export const fn = {
  // objects
  objectOpenFile: lib.func('bpf_object *bpf_object__open_file(const char *path, const bpf_object_open_opts *opts)'),
  objectLoad: lib.func('int bpf_object__load(bpf_object *obj)'),
  objectClose: lib.func('void bpf_object__close(bpf_object *obj)'),
  objectBtf: lib.func('btf *bpf_object__btf(const bpf_object *obj)'),
  objectNextProgram: lib.func('bpf_program *bpf_object__next_program(const bpf_object *obj, bpf_program *prog)'),
  objectNextMap: lib.func('bpf_map *bpf_object__next_map(const bpf_object *obj, bpf_map *map)'),
  // programs
  programName: lib.func('const char *bpf_program__name(const bpf_program *prog)'),
  programSectionName: lib.func('const char *bpf_program__section_name(const bpf_program *prog)'),
  programFd: lib.func('int bpf_program__fd(const bpf_program *prog)'),
  programType: lib.func('int bpf_program__type(const bpf_program *prog)'),
  programSetAutoload: lib.func('int bpf_program__set_autoload(bpf_program *prog, bool autoload)'),
  programExpectedAttachType: lib.func('int bpf_program__expected_attach_type(const bpf_program *prog)'),
  // maps
  mapName: lib.func('const char *bpf_map__name(const bpf_map *map)'),
  mapFd: lib.func('int bpf_map__fd(const bpf_map *map)'),
  mapType: lib.func('int bpf_map__type(const bpf_map *map)'),
  mapKeySize: lib.func('uint32_t bpf_map__key_size(const bpf_map *map)'),
  mapValueSize: lib.func('uint32_t bpf_map__value_size(const bpf_map *map)'),
  mapMaxEntries: lib.func('uint32_t bpf_map__max_entries(const bpf_map *map)'),
  mapFlags: lib.func('uint32_t bpf_map__map_flags(const bpf_map *map)'),
  mapBtfKeyTypeId: lib.func('uint32_t bpf_map__btf_key_type_id(const bpf_map *map)'),
  mapBtfValueTypeId: lib.func('uint32_t bpf_map__btf_value_type_id(const bpf_map *map)'),
  mapSetMaxEntries: lib.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t max_entries)'),
  mapInitialValue: lib.func('void *bpf_map__initial_value(bpf_map *map, _Out_ size_t *psize)'),
  mapSetPinPath: lib.func('int bpf_map__set_pin_path(bpf_map *map, const char *path)'),
  mapPinPath: lib.func('const char *bpf_map__pin_path(const bpf_map *map)'),
  mapUpdateElem: lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  mapLookupElem: lib.func('int bpf_map_lookup_elem(int fd, const void *key, _Out_ void *value)'),
  mapDeleteElem: lib.func('int bpf_map_delete_elem(int fd, const void *key)'),
  mapLookupBatch: lib.func('int bpf_map_lookup_batch(int fd, void *in_batch, _Out_ void *out_batch, _Out_ void *keys, _Out_ void *values, _Inout_ uint32_t *count, const void *opts)'),
  mapGetNextKey: lib.func('int bpf_map_get_next_key(int fd, const void *key, _Out_ void *next_key)'),
  // fd API: pins, info, links, test runs
  objPin: lib.func('int bpf_obj_pin(int fd, const char *pathname)'),
  objGet: lib.func('int bpf_obj_get(const char *pathname)'),
  objGetInfoByFd: lib.func('int bpf_obj_get_info_by_fd(int bpf_fd, _Inout_ void *info, _Inout_ uint32_t *info_len)'),
  linkCreate: lib.func('int bpf_link_create(int prog_fd, int target_fd, int attach_type, const void *opts)'),
  progAttach: lib.func('int bpf_prog_attach(int prog_fd, int attachable_fd, int type, unsigned int flags)'),
  progDetach2: lib.func('int bpf_prog_detach2(int prog_fd, int attachable_fd, int type)'),
  linkUpdate: lib.func('int bpf_link_update(int link_fd, int new_prog_fd, const void *opts)'),
  linkDetachFd: lib.func('int bpf_link_detach(int link_fd)'),
  progTestRun: lib.func('int bpf_prog_test_run_opts(int prog_fd, _Inout_ bpf_test_run_opts *opts)'),
  // tc (legacy cls_bpf on clsact)
  tcHookCreate: lib.func('int bpf_tc_hook_create(bpf_tc_hook *hook)'),
  tcAttach: lib.func('int bpf_tc_attach(const bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)'),
  tcDetach: lib.func('int bpf_tc_detach(const bpf_tc_hook *hook, const bpf_tc_opts *opts)'),
  tcQuery: lib.func('int bpf_tc_query(const bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)'),
  // ring buffer
  ringBufferNew: lib.func('ring_buffer *ring_buffer__new(int map_fd, ring_buffer_sample_fn *cb, void *ctx, const void *opts)'),
  ringBufferFree: lib.func('void ring_buffer__free(ring_buffer *rb)'),
  ringBufferConsume: lib.func('int ring_buffer__consume(ring_buffer *rb)'),
  ringBufferEpollFd: lib.func('int ring_buffer__epoll_fd(const ring_buffer *rb)'),
  // BTF
  btfParseElf: lib.func('btf *btf__parse_elf(const char *path, void *btf_ext)'),
  btfLoadFromKernelById: lib.func('btf *btf__load_from_kernel_by_id(uint32_t id)'),
  btfFree: lib.func('void btf__free(btf *btf)'),
  btfTypeById: lib.func('const void *btf__type_by_id(const btf *btf, uint32_t id)'),
  btfNameByOffset: lib.func('const char *btf__name_by_offset(const btf *btf, uint32_t offset)'),
  btfFindByNameKind: lib.func('int btf__find_by_name_kind(const btf *btf, const char *name, uint32_t kind)'),
  // feature probes
  probeProgType: lib.func('int libbpf_probe_bpf_prog_type(int prog_type, const void *opts)'),
  probeMapType: lib.func('int libbpf_probe_bpf_map_type(int map_type, const void *opts)'),
  // BPF_ENABLE_STATS: per-program run_time_ns/run_cnt while the returned fd is open
  enableStats: lib.func('int bpf_enable_stats(int type)'),
  setPrint: lib.func('void *libbpf_set_print(libbpf_print_fn *fn)'),
};

/**
 * libbpf's messages (including the verifier log it prints on a failed load)
 * are captured here instead of going to stderr, so errors can carry them.
 * The callback gets a va_list: format it with libc's vsnprintf.
 */
const LOG_LIMIT = 256 * 1024;
let captured = '';
const fmtBuf = Buffer.alloc(64 * 1024);
const printCb = koffi.register((level: number, fmt: string, ap: unknown) => {
  const n = vsnprintf(fmtBuf, fmtBuf.length, fmt, ap) as number;
  const text = fmtBuf.toString('utf8', 0, Math.max(0, Math.min(n, fmtBuf.length - 1)));
  captured += text;
  if (captured.length > LOG_LIMIT) captured = captured.slice(-LOG_LIMIT);
  if (process.env.MESHWARP_LIBBPF_DEBUG) process.stderr.write(`[libbpf:${level}] ${text}`);
  return 0;
}, koffi.pointer(PrintFn));
fn.setPrint(printCb);

/** Starts a fresh capture window; returns a function that reads what libbpf said since. */
export function captureLibbpfLog(): () => string {
  captured = '';
  return () => captured;
}

/** Stable `code` of each BpfError class: branch on it, never on message text. */
export type BpfErrorCode = 'ERR_BPF' | 'ERR_BPF_NOT_FOUND' | 'ERR_BPF_MAP_FULL' | 'ERR_BPF_EXISTS' | 'ERR_BPF_NOT_SUPPORTED';

/** An error from libbpf or the bpf() syscall: errno, libbpf's message, verifier log tail. */
export class BpfError extends Error {
  readonly code: BpfErrorCode = 'ERR_BPF';
  readonly errno: number;
  readonly op: string;
  readonly libbpfLog: string;
  constructor(op: string, errno: number, libbpfLog = '', extra = '') {
    const tail = libbpfLog.trim().split('\n').slice(-25).join('\n');
    super(`${op}: ${strerror(errno)} (errno ${errno})${extra ? ` — ${extra}` : ''}${tail ? `\n${tail}` : ''}`);
    this.name = new.target.name;
    this.errno = errno;
    this.op = op;
    this.libbpfLog = libbpfLog;
  }
}

/** libbpf 1.x returns -errno from int APIs; throws BpfError for negatives. */
export function check(op: string, ret: number, log?: () => string): number {
  if (ret < 0) throw new BpfError(op, -ret, log?.() ?? '');
  return ret;
}

/** libbpf 1.x returns NULL and sets errno for pointer APIs. */
export function checkPtr<T>(op: string, ptr: T | null, log?: () => string): T {
  if (ptr === null) throw new BpfError(op, koffi.errno() || ERRNO.EINVAL, log?.() ?? '');
  return ptr;
}
