// Running iptables-save and iptables-restore for the nat table; their failures as MESH_ERR_CAPTURE.

import { execFile } from 'node:child_process';
import { MeshError } from '../errors';
import { captureState, installScript, removeScript, type CaptureRules, type CaptureState } from './capture-rules';

/** Runs a command with `input` on stdin; resolves with stdout. @throws MeshError MESH_ERR_CAPTURE */
function exec(cmd: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const e = err as NodeJS.ErrnoException;
      const why =
        e.code === 'ENOENT'
          ? `${cmd} is not installed (apt-get install iptables)`
          : /denied|not permitted/i.test(stderr)
            ? `${cmd} was refused: capture needs CAP_NET_ADMIN (run as root, or AmbientCapabilities=CAP_NET_ADMIN in the unit)`
            : `${cmd} ${args.join(' ')} failed: ${stderr.trim() || e.message}`;
      reject(new MeshError('MESH_ERR_CAPTURE', why, { cause: err }));
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** The nat table as `iptables-save -t nat` prints it. @throws MeshError MESH_ERR_CAPTURE */
export function natTable(): Promise<string> {
  return exec('iptables-save', ['-t', 'nat']);
}

/** Programs the mesh chains to hold `rules` (idempotent, atomic). @throws MeshError MESH_ERR_CAPTURE */
export async function installCapture(rules: CaptureRules): Promise<void> {
  await exec('iptables-restore', ['--noflush', '--wait'], installScript(await natTable(), rules));
}

/** Removes every mesh chain and jump; returns whether there was anything to remove. @throws MeshError MESH_ERR_CAPTURE */
export async function removeCapture(): Promise<boolean> {
  const script = removeScript(await natTable());
  if (script === undefined) return false;
  await exec('iptables-restore', ['--noflush', '--wait'], script);
  return true;
}

/** The mesh chains now in the nat table. @throws MeshError MESH_ERR_CAPTURE */
export async function readCaptureState(): Promise<CaptureState> {
  return captureState(await natTable());
}
