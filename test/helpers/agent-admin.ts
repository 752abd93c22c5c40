// Reads a running agent's admin port the way an operator's tools would: with the token from its state dir.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentHandle } from './mesh';

/** GET on the agent's admin port; with `token` false, without the bearer token. */
export function adminGet(agent: AgentHandle, path: string, token = true): Promise<Response> {
  const headers: Record<string, string> = token ? { authorization: `Bearer ${readFileSync(join(agent.stateDir, 'admin-token'), 'utf8').trim()}` } : {};
  return fetch(`http://${agent.admin}${path}`, { headers });
}

/** The agent's /status document. */
export async function agentStatus<T = Record<string, any>>(agent: AgentHandle): Promise<T> {
  return (await adminGet(agent, '/status')).json() as Promise<T>;
}

/** The value of one Prometheus sample (`name{labels}` exactly as rendered), or undefined when absent. */
export async function metric(agent: AgentHandle, sample: string): Promise<number | undefined> {
  const text = await (await adminGet(agent, '/metrics')).text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? undefined : Number(line.slice(sample.length + 1));
}

/** Polls `check` every 100 ms until it returns a value; `what` names the condition in the timeout error. */
export async function until<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms${last ? ` (last error: ${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
