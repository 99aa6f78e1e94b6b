// SPDX-License-Identifier: Apache-2.0
// `meshwarp uninstall`: removes everything meshwarp made on this node and
// nothing else — through the running agent, or offline from its pins and state.
import { parseAgentArgs, makeDrivers } from './agent.ts';
import { AgentUnreachableError, agentRequest } from '../agent/client.ts';
import { Agent } from '../agent/agent.ts';

export async function run(argv: string[]): Promise<number> {
  const cfg = parseAgentArgs(argv);
  if (!cfg) { process.stdout.write('usage: meshwarp uninstall [agent options]\n'); return 0; }
  try {
    await agentRequest('POST', '/v1/uninstall', {}, cfg.socket);
    process.stdout.write('uninstalled through the running agent\n');
    return 0;
  } catch (e) {
    if (!(e instanceof AgentUnreachableError)) throw e;
  }
  const agent = new Agent(cfg, await makeDrivers(cfg));
  await agent.start(); // adopts pins and recorded pods so it knows what to remove
  await agent.uninstall();
  process.stdout.write('uninstalled (agent was not running)\n');
  return 0;
}
