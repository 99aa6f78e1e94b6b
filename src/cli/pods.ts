// SPDX-License-Identifier: Apache-2.0
export { runPods as run } from './status.ts';
