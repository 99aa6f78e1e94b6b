// SPDX-License-Identifier: Apache-2.0
// The A/B benchmark as a script: same options and output as `meshwarp bench`.
//   sudo .tools/node/bin/node bench/run.ts [--full] [--json] [--chart PATH] ...
import { run } from '../src/cli/bench.ts';

process.exitCode = await run(process.argv.slice(2));
