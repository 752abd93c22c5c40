// `mesh-agent admin-token create|list|revoke`: named admin tokens, so policy history says who made each change.

import type { Command } from 'commander';
import { adminCall, type AdminFlags } from './admin-client';
import { adminOptions, examples, json, output } from './command-helpers';

export function addAdminTokenCommands(program: Command): void {
  const group = program
    .command('admin-token')
    .description('manage named admin tokens (server admin API); policy history records the name of the token behind each change')
    .addHelpText('after', examples(['mesh-agent admin-token create --name alice', 'mesh-agent admin-token list', 'mesh-agent admin-token revoke --name alice']));
  adminOptions(
    group
      .command('create')
      .description('create a named admin token; it is printed once, the server keeps only its hash')
      .requiredOption('--name <name>', 'who uses it: lower-case letters, digits, "." and "-" (not "admin", the bootstrap token\'s name)')
      .addOption(output())
      .addHelpText('after', examples(['mesh-agent admin-token create --name alice', 'MESH_ADMIN_TOKEN=$(mesh-agent admin-token create --name ci-deploy -o json | jq -r .token)'])),
  ).action(async (opts: AdminFlags & { name: string; output: string }) => {
    const res = await adminCall(opts, 'POST', '/v1/admin-tokens', { name: opts.name });
    if (opts.output === 'json') return json(res);
    process.stdout.write(`${res.token as string}\n`);
    process.stderr.write(`admin token "${res.name as string}" created by ${res.createdBy as string}; shown once, keep it secret (use it with --admin-token or MESH_ADMIN_TOKEN)\n`);
  });
  adminOptions(group.command('list').description('list named admin tokens (never their secrets)').addOption(output()).addHelpText('after', examples(['mesh-agent admin-token list', 'mesh-agent admin-token list -o json']))).action(
    async (opts: AdminFlags & { output: string }) => {
      const res = await adminCall(opts, 'GET', '/v1/admin-tokens');
      if (opts.output === 'json') return json(res);
      const tokens = res.tokens as { name: string; createdAt: string; createdBy: string; lastUsedAt: string | null }[];
      if (tokens.length === 0) process.stdout.write('no named admin tokens (only the bootstrap token, "admin")\n');
      for (const t of tokens) process.stdout.write(`${t.name}  created ${t.createdAt} by ${t.createdBy}  last used ${t.lastUsedAt ?? 'never'}\n`);
    },
  );
  adminOptions(
    group
      .command('revoke')
      .description('revoke a named admin token: it is refused from now on')
      .requiredOption('--name <name>', 'the token to revoke')
      .addOption(output())
      .addHelpText('after', examples(['mesh-agent admin-token revoke --name alice'])),
  ).action(async (opts: AdminFlags & { name: string; output: string }) => {
    const res = await adminCall(opts, 'POST', '/v1/admin-tokens/revoke', { name: opts.name });
    if (opts.output === 'json') return json(res);
    process.stdout.write(`admin token "${opts.name}" revoked\n`);
  });
}
