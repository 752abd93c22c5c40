// Several hosts on one machine for tests: Linux network namespaces on a private bridge, torn down even when a test fails.
//
// Layout of one run (nothing is added to the machine's own network namespace):
//   <prefix>sw     a "switch" namespace holding the bridge br0
//   <prefix><host> one namespace per host: lo, and eth0 (a veth whose peer v-<host> is a port of br0)
// Addresses are 10.x.y.z/24 and exist only inside these namespaces, so they can clash with nothing outside them.
// The prefix is `mhtest-<tag>-<pid>-`: unique per run, and a later run of the same tag removes the namespaces (and
// kills the processes) of runs whose process is gone, so a crashed run leaves nothing behind for long.

import { execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { meshAgent, Proc } from '../helpers/processes';

const run = promisify(execFile);

/** One simulated host: its network namespace and its address on the bridge. */
export interface Host {
  readonly name: string;
  readonly netns: string;
  readonly address: string;
}

/** A packet capture on the bridge (tcpdump in the switch namespace), as pcap bytes. */
export interface BridgeCapture {
  /** Stops tcpdump and resolves with everything it wrote. */
  stop(): Promise<Buffer>;
}

const NAME = /^[a-z][a-z0-9]{0,7}$/;

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Why host tests cannot run on this machine (a message for `skip`), or undefined when they can. */
export function hostNetworkUnavailable(needs: readonly string[] = []): string | undefined {
  if (process.platform !== 'linux') return 'several-host tests need Linux network namespaces';
  if (process.getuid?.() !== 0) return 'several-host tests need root (ip netns, veth, bridge); CI runs them as root';
  for (const cmd of ['ip', ...needs]) if (!onPath(cmd)) return `several-host tests need \`${cmd}\` on PATH (apt-get install ${cmd === 'ip' ? 'iproute2' : cmd})`;
  return undefined;
}

/** Runs `ip <args>`; @throws Error with ip's own message. */
async function ip(...args: string[]): Promise<string> {
  try {
    return (await run('ip', args)).stdout;
  } catch (err) {
    throw new Error(`ip ${args.join(' ')}: ${((err as { stderr?: string }).stderr ?? (err as Error).message).trim()}`);
  }
}

function pidAlive(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}

/** Kills every process inside a namespace (SIGKILL), then deletes the namespace. Missing namespaces are fine. */
async function removeNamespace(netns: string): Promise<void> {
  const pids = await ip('netns', 'pids', netns).catch(() => '');
  for (const pid of pids.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await ip('netns', 'del', netns).catch(() => undefined);
  rmSync(etcDir(netns), { recursive: true, force: true });
}

/** Where `ip netns exec` finds files it bind-mounts over /etc for a namespace (resolv.conf, hosts). */
function etcDir(netns: string): string {
  return `/etc/netns/${netns}`;
}

/** N hosts joined by one bridge. Create with `HostNetwork.create`, remove with `destroy()` (in an `after` hook). */
export class HostNetwork {
  private readonly hosts = new Map<string, Host>();
  private readonly procs: Proc[] = [];
  private readonly captures: (() => void)[] = [];
  private destroyed = false;

  private constructor(
    readonly prefix: string,
    private readonly subnet: string,
  ) {}

  /**
   * Removes what earlier, crashed runs of the same tag left, then makes the switch namespace and its bridge.
   * @param tag a short name for the test (letters, digits), part of every namespace name
   * @param subnet the first three octets of the hosts' /24, such as "10.77.0"
   */
  static async create(tag: string, subnet = '10.77.0'): Promise<HostNetwork> {
    if (!NAME.test(tag)) throw new Error(`tag ${JSON.stringify(tag)}: expected 1 to 8 lower-case letters and digits`);
    if (!/^10\.\d{1,3}\.\d{1,3}$/.test(subnet)) throw new Error(`subnet ${JSON.stringify(subnet)}: expected a private 10.x.y prefix`);
    await HostNetwork.removeLeftovers(tag);
    const net = new HostNetwork(`mhtest-${tag}-${process.pid}-`, subnet);
    const sw = net.switchNs;
    try {
      await ip('netns', 'add', sw);
      await ip('-n', sw, 'link', 'set', 'lo', 'up');
      await ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge');
      await ip('-n', sw, 'link', 'set', 'br0', 'up');
    } catch (err) {
      await net.destroy();
      throw err;
    }
    return net;
  }

  /** Namespaces named `mhtest-<tag>-<pid>-*` whose run (pid) is no longer alive. */
  static async removeLeftovers(tag: string): Promise<string[]> {
    const re = new RegExp(`^(mhtest-${tag}-(\\d+)-\\S+)`);
    const names = (await ip('netns', 'list'))
      .split('\n')
      .map((line) => re.exec(line))
      .filter((m): m is RegExpExecArray => m !== null && Number(m[2]) !== process.pid && !pidAlive(Number(m[2])))
      .map((m) => m[1]!);
    for (const n of names) await removeNamespace(n);
    return names;
  }

  private get switchNs(): string {
    return `${this.prefix}sw`;
  }

  /** Adds a host `name` with address `<subnet>.<index>` (index 1 to 254, unique in this network). */
  async addHost(name: string, index: number): Promise<Host> {
    if (!NAME.test(name) || name === 'sw') throw new Error(`host name ${JSON.stringify(name)}: expected 1 to 8 lower-case letters and digits, not "sw"`);
    if (!Number.isInteger(index) || index < 1 || index > 254) throw new Error(`host index ${index}: expected 1 to 254`);
    if (this.hosts.has(name)) throw new Error(`host ${name} exists already`);
    const host: Host = { name, netns: `${this.prefix}${name}`, address: `${this.subnet}.${index}` };
    if ([...this.hosts.values()].some((h) => h.address === host.address)) throw new Error(`address ${host.address} is taken`);
    this.hosts.set(name, host);
    const sw = this.switchNs;
    await ip('netns', 'add', host.netns);
    await ip('-n', host.netns, 'link', 'set', 'lo', 'up');
    await ip('-n', sw, 'link', 'add', `v-${name}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.netns);
    await ip('-n', sw, 'link', 'set', `v-${name}`, 'master', 'br0', 'up');
    await ip('-n', host.netns, 'addr', 'add', `${host.address}/24`, 'dev', 'eth0');
    await ip('-n', host.netns, 'link', 'set', 'eth0', 'up');
    return host;
  }

  /**
   * Gives `host` its own /etc/resolv.conf: `ip netns exec` mounts /etc/netns/<netns>/resolv.conf over it, for
   * every command started in the host afterwards. Removed with the namespace.
   */
  setResolvConf(host: Host, text: string): void {
    mkdirSync(etcDir(host.netns), { recursive: true });
    writeFileSync(`${etcDir(host.netns)}/resolv.conf`, text);
  }

  /** Starts `mesh-agent <args>` inside `host`; the process is killed in `destroy()`. */
  meshAgent(host: Host, name: string, args: string[]): Proc {
    return this.track(meshAgent(`${host.name}/${name}`, args, {}, { wrap: ['ip', 'netns', 'exec', host.netns] }));
  }

  /** Starts any command inside `host`; the process is killed in `destroy()`. */
  spawn(host: Host, name: string, argv: readonly string[]): Proc {
    return this.track(new Proc(`${host.name}/${name}`, spawn('ip', ['netns', 'exec', host.netns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })));
  }

  /** Runs a command inside `host` to completion. */
  async run(host: Host, argv: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const p = this.spawn(host, argv[0]!, argv);
    const code = await p.exited;
    return { code, stdout: p.stdout, stderr: p.stderr };
  }

  /**
   * Starts tcpdump on the bridge, so it sees every frame between hosts; resolves once it is capturing.
   * @param filter a pcap filter such as "tcp"
   */
  async captureBridge(filter = 'tcp'): Promise<BridgeCapture> {
    // --immediate-mode: each packet is handed over as it comes, not in blocks; -U: and written at once;
    // -w -: pcap to stdout (no file for tcpdump's dropped privileges to reach).
    const argv = ['netns', 'exec', this.switchNs, 'tcpdump', '-i', 'br0', '--immediate-mode', '-U', '-s', '0', '-w', '-', filter];
    const child = spawn('ip', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let lastData = Date.now();
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      chunks.push(c);
      lastData = Date.now();
    });
    // 'close', not 'exit': the last packets may still be in the pipe when tcpdump exits.
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const kill = (): void => void (child.exitCode === null && child.kill('SIGKILL'));
    this.captures.push(kill);
    await new Promise<void>((resolve, reject) => {
      child.stderr.on('data', (c: Buffer) => {
        stderr += c.toString();
        if (/listening on br0/.test(stderr)) resolve();
      });
      void exited.then(() => reject(new Error(`tcpdump exited before capturing: ${stderr}`)));
    });
    return {
      stop: async () => {
        // The frames of the last exchange may still be on their way to tcpdump: stop once it has written nothing for
        // half a second (at most 5 s). SIGINT makes tcpdump flush and exit cleanly.
        const deadline = Date.now() + 5000;
        while (Date.now() - lastData < 500 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        if (child.exitCode === null) child.kill('SIGINT');
        await exited;
        return Buffer.concat(chunks);
      },
    };
  }

  /** Kills every process started here and in the namespaces, and deletes the namespaces. Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const kill of this.captures) kill();
    await Promise.all(this.procs.map((p) => p.stop('SIGKILL')));
    for (const h of this.hosts.values()) await removeNamespace(h.netns);
    await removeNamespace(this.switchNs);
  }

  private track(p: Proc): Proc {
    this.procs.push(p);
    return p;
  }
}
