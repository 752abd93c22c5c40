// Reads a node agent's /status over its loopback admin port, with the token from its state dir.

import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { request } from 'undici';
import { MeshError } from '../errors';

export async function agentStatus(addr: string, stateDir: string): Promise<Record<string, unknown>> {
  const file = join(resolve(stateDir), 'admin-token');
  let token: string;
  try {
    token = readFileSync(file, 'utf8').trim();
  } catch {
    throw new MeshError('MESH_ERR_ADMIN_AUTH', `cannot read the agent admin token ${file}: pass --state-dir of the agent`);
  }
  const url = `${/^https?:\/\//.test(addr) ? addr : `http://${addr}`}/status`;
  try {
    const res = await request(url, { headers: { authorization: `Bearer ${token}` }, headersTimeout: 5000, bodyTimeout: 5000 });
    const body = (await res.body.json()) as Record<string, unknown>;
    if (res.statusCode !== 200) throw new MeshError('MESH_ERR_ADMIN_AUTH', `agent answered ${res.statusCode}: ${JSON.stringify(body.error ?? body)}`);
    return body;
  } catch (err) {
    if (err instanceof MeshError) throw err;
    throw new MeshError('MESH_ERR_SERVER_UNREACHABLE', `cannot reach the agent admin port at ${url}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}
