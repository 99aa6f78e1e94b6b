// SPDX-License-Identifier: Apache-2.0
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { idleTrimmer } from '../../src/agent/trim.ts';
import { mallocTrim } from '../../src/sys/libc.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('idle trimming runs once, after the requests stop for the idle time', async () => {
  const calls: number[] = [];
  const arm = idleTrimmer(60, (pad) => { calls.push(pad); return 1; });
  for (let i = 0; i < 5; i++) { arm(); await sleep(20); } // a burst: each request pushes it back
  assert.deepEqual(calls, [], 'not during the burst');
  await sleep(120);
  assert.deepEqual(calls, [0], 'once, with pad 0 (hand back everything)');
  arm();
  await sleep(120);
  assert.deepEqual(calls, [0, 0], 'and again after the next burst');
});

test("glibc's malloc_trim runs here (Debian, as in the image)", () => {
  assert.ok([0, 1].includes(mallocTrim(0)), 'malloc_trim returns 1 when it freed memory, else 0');
});
