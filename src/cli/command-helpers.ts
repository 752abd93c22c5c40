// Pieces every command shares: help examples, the output option, the admin API flags, JSON printing.

import { Option, type Command } from 'commander';

/** The "Examples:" block of a command's --help. */
export const examples = (lines: string[]): string => `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`;

/** `-o, --output <format>`, text by default. */
export const output = (formats: readonly string[] = ['text', 'json']): Option => new Option('-o, --output <format>', 'output format').choices([...formats]).default('text');

/** The flags of a command that calls the server's admin API. */
export const adminOptions = (c: Command): Command =>
  c
    .option('--admin <addr>', 'server admin API address (env MESH_ADMIN_ADDR)', undefined)
    .option('--admin-token <token>', 'admin token (env MESH_ADMIN_TOKEN; default: read from the data dir)')
    .option('--data-dir <dir>', "the server's data dir, to read its admin-token file (env MESH_DATA_DIR)");

/** Prints a value as indented JSON. */
export function json(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
