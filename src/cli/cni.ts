// SPDX-License-Identifier: Apache-2.0
// `meshwarp cni ...`: see src/cni/cli.ts.
export { run } from '../cni/cli.ts';
