// SPDX-License-Identifier: Apache-2.0
// Which `ip monitor address` events make the agent re-read the node's addresses.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { changesGlobal } from '../../src/agent/node-addrs.ts';

const linkLocal = '2: vb    inet6 fe80::6002:aeff:fe1e:4a23/64 scope link \n       valid_lft forever preferred_lft forever\n';
const global = '3: va    inet 10.9.9.1/24 scope global va\n       valid_lft forever preferred_lft forever\n';

test('a pod veth\'s link-local address (added or deleted) does not change the node\'s set', () => {
  assert.equal(changesGlobal(linkLocal), false);
  assert.equal(changesGlobal(`Deleted ${linkLocal}${linkLocal}`), false);
  assert.equal(changesGlobal('1: lo    inet 127.0.0.1/8 scope host lo\n'), false);
});

test('a global address, alone or in a burst with link-local ones, does', () => {
  assert.equal(changesGlobal(global), true);
  assert.equal(changesGlobal(`${linkLocal}Deleted ${global}`), true);
  assert.equal(changesGlobal('4: br0    inet6 fd00::1/64 scope 200 \n'), true);
});

test('a chunk that names no scope (output split mid-event) is re-read, to be safe', () => {
  assert.equal(changesGlobal('       valid_lft forever preferred_lft forever\n'), true);
});
