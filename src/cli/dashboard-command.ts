// `mesh-agent dashboard`: prints a one-time login link to the dashboard the server serves on its admin port.

import type { Command } from 'commander';
import { adminCall, adminUrl, type AdminFlags } from './admin-client';
import { adminOptions, examples, json, output } from './command-helpers';

/** Adds `dashboard` to the program. */
export function addDashboardCommand(program: Command): void {
  adminOptions(
    program
      .command('dashboard')
      .description('print a login link to the web dashboard (services, graph, agents, policy): it works once, within 2 minutes, and leaves a session cookie')
      .addOption(output())
      .addHelpText(
        'after',
        examples([
          'mesh-agent dashboard                                  # then open the link on this machine',
          'mesh-agent dashboard --data-dir /var/lib/mesh-server',
          'xdg-open "$(mesh-agent dashboard -o json | jq -r .url)"',
          'ssh -L 15014:127.0.0.1:15014 server-host   # from a laptop, then run the command on the server and open the link locally',
        ]),
      ),
  ).action(async (opts: AdminFlags & { output: string }) => {
    const res = await adminCall(opts, 'POST', '/v1/dashboard/login-codes');
    const url = `${adminUrl(opts)}${res.path as string}`;
    if (opts.output === 'json') return json({ url, expiresAt: res.expiresAt });
    process.stdout.write(`${url}\n`);
    process.stderr.write(`open it in a browser within 2 minutes (until ${res.expiresAt as string}); it works once. The JSON behind the page: GET /v1/dashboard/{services,graph,agents,policies} with the admin token.\n`);
  });
}
