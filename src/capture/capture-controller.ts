// The agent's side of capture: installs the rules at start, keeps them in step with services and endpoints, removes them on stop.

import type { HostPort } from '../config';
import { describeError } from '../errors';
import type { Logger } from '../telemetry';
import { chainRules } from './capture-rules';
import { planCapture, type CapturePlan, type CaptureSettings, type CaptureSubject } from './capture-plan';
import { DnsResponder, meshNameLookup } from './dns-responder';
import { installCapture, removeCapture } from './iptables';

/** What `status --agent` shows under `capture`. */
export interface CaptureStatus {
  readonly virtualIps: Readonly<Record<string, string>>;
  readonly destinations: readonly { service: string; dial: string; listener: string }[];
  readonly inboundPorts: readonly number[];
  readonly dns: { listen: string; answered: number; refused: number; malformed: number } | null;
  readonly writes: number;
  readonly lastError: string | null;
}

/** How long endpoint and service changes are gathered before the rules are written again. */
const SETTLE_MS = 100;

export class CaptureController {
  private plan?: CapturePlan;
  private installed = '';
  private timer?: NodeJS.Timeout;
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  private lastError: string | undefined;
  private dns?: DnsResponder;
  private dnsBound?: HostPort;
  /** Times the rules were written (a change in services or endpoints; unchanged rules are not written again). */
  private writes = 0;

  constructor(
    private readonly settings: CaptureSettings & { readonly dns: HostPort | undefined },
    private readonly subject: () => CaptureSubject,
    private readonly log: Logger,
    private readonly agentUid = process.getuid?.() ?? 0,
  ) {}

  /**
   * Starts the DNS responder, then writes the rules for the services now (all at once: on failure nothing is
   * installed and the responder is stopped again).
   * @throws MeshError MESH_ERR_CAPTURE (iptables), MESH_ERR_LISTEN (DNS address), MESH_ERR_CONFIG (virtual IP range)
   */
  async start(): Promise<void> {
    if (this.settings.dns) {
      this.dns = new DnsResponder((name) => meshNameLookup(this.plan?.virtualIps ?? new Map())(name), this.log);
      this.dnsBound = await this.dns.listen(this.settings.dns);
    }
    try {
      await this.write();
    } catch (err) {
      await this.dns?.close();
      throw err;
    }
  }

  /** Services or endpoints changed: the rules are written again soon (once for a burst of changes). */
  refresh(): void {
    if (this.closed || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.chain = this.chain.then(() => this.write()).catch((err: unknown) => {
        this.lastError = describeError(err);
        this.log.error('capture rules not updated, keeping the ones installed', { error: this.lastError });
      });
    }, SETTLE_MS);
  }

  private async write(): Promise<void> {
    if (this.closed) return;
    const plan = planCapture(this.settings, this.subject(), this.agentUid);
    for (const c of plan.conflicts) this.log.warn('captured destination claimed by two upstreams, the first one wins', { destination: c });
    const text = chainRules(plan.rules).join('\n');
    this.plan = plan;
    if (text === this.installed) return;
    await installCapture(plan.rules);
    this.installed = text;
    this.writes++;
    this.lastError = undefined;
    this.log.info('capture rules installed', { destinations: plan.rules.outbound.length, inboundPorts: plan.rules.inboundPorts.join(',') || '-' });
  }

  /**
   * Stops the DNS responder and removes the rules (after any write in progress), when this run installed them.
   * @throws MeshError MESH_ERR_CAPTURE
   */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.chain;
    await this.dns?.close();
    if (this.writes > 0 && (await removeCapture())) this.log.info('capture rules removed');
  }

  status(): CaptureStatus {
    return {
      virtualIps: Object.fromEntries(this.plan?.virtualIps ?? []),
      destinations: (this.plan?.rules.outbound ?? []).map((d) => ({ service: d.service, dial: `${d.address}:${d.port}`, listener: `${d.to.host}:${d.to.port}` })),
      inboundPorts: this.plan?.rules.inboundPorts ?? [],
      dns: this.dnsBound ? { listen: `${this.dnsBound.host}:${this.dnsBound.port}`, ...this.dns!.stats } : null,
      writes: this.writes,
      lastError: this.lastError ?? null,
    };
  }
}
