// What a SIGHUP reload may change: the new config with the restart-only fields kept, and which parts differ.

import { deepFreeze, formatHostPort } from '../config';
import type { AgentConfig } from './agent-config';

/** Fields a running agent cannot take without a restart: they name the node, its state, bound ports, the capture rules' settings, set timers and request-path hooks, or size the listeners' limits. */
export const RESTART_ONLY_FIELDS = ['nodeName', 'stateDir', 'server', 'inbound', 'admin', 'capture', 'gossip', 'requestTelemetry', 'multiplex', 'limits'] as const;

/** The parts of a reload that need more than the service set to be applied again. */
export interface ReloadPlan {
  /** The config to run: the new one, with the restart-only fields of the running one. */
  readonly config: AgentConfig;
  /** Restart-only fields whose value differs (kept as they are, with a warning). */
  readonly restartNeeded: readonly string[];
  readonly endpointsFileChanged: boolean;
  readonly consulChanged: boolean;
  readonly addressChanged: boolean;
}

const show = (v: unknown): string => (v && typeof v === 'object' && 'port' in v ? formatHostPort(v as { host: string; port: number }) : JSON.stringify(v ?? null));

export function planReload(running: AgentConfig, next: AgentConfig): ReloadPlan {
  const restartNeeded = RESTART_ONLY_FIELDS.filter((k) => show(running[k]) !== show(next[k])).map((k) => `${k} (${show(running[k])} -> ${show(next[k])})`);
  const kept = Object.fromEntries(RESTART_ONLY_FIELDS.map((k) => [k, running[k]]));
  return {
    config: deepFreeze({ ...next, ...kept }),
    restartNeeded,
    endpointsFileChanged: running.endpointsFile !== next.endpointsFile,
    consulChanged: JSON.stringify(running.consul ?? null) !== JSON.stringify(next.consul ?? null),
    addressChanged: running.address !== next.address,
  };
}
