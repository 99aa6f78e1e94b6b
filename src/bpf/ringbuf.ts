// SPDX-License-Identifier: Apache-2.0
// BPF ring buffer consumer on Node's event loop: libuv polls libbpf's epoll fd
// (koffi.node.poll) and we consume on the main thread when it is readable.
// No extra thread, no busy loop. Producers that batch their wakeups
// (BPF_RB_NO_WAKEUP) get `drainMs`: a timer that also consumes what is
// pending, so a trickle of events still shows up promptly.
import koffi from 'koffi';
import { fn, checkPtr, check, RingBufferSampleFn } from './libbpf.ts';

export class RingBufferReader {
  #rb: unknown;
  readonly #cb: koffi.IKoffiRegisteredCallback;
  readonly #poll: { close(): void };
  readonly #timer: NodeJS.Timeout | undefined;

  constructor(mapFd: number, onSample: (data: Buffer) => void, opts: { drainMs?: number } = {}) {
    this.#cb = koffi.register((_ctx: unknown, data: unknown, size: number) => {
      onSample(Buffer.from(koffi.view(data, Number(size)).slice(0)));
      return 0;
    }, koffi.pointer(RingBufferSampleFn));
    this.#rb = checkPtr('ring_buffer__new', fn.ringBufferNew(mapFd, this.#cb, null, null));
    const epfd = fn.ringBufferEpollFd(this.#rb);
    this.#poll = (koffi as any).node.poll(epfd, { readable: true }, () => this.consume());
    if (opts.drainMs) this.#timer = setInterval(() => this.consume(), opts.drainMs).unref();
  }

  /** Consumes everything available now; returns the number of samples. */
  consume(): number {
    if (this.#rb === null) return 0;
    return check('ring_buffer__consume', fn.ringBufferConsume(this.#rb));
  }

  close(): void {
    if (this.#rb === null) return;
    clearInterval(this.#timer);
    this.#poll.close();
    fn.ringBufferFree(this.#rb);
    koffi.unregister(this.#cb);
    this.#rb = null;
  }
}
