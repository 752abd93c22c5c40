// How this program starts itself again as a child: Node.js with main.js, or the single-file binary on its own.

import { join } from 'node:path';
import * as sea from 'node:sea';

/** The arguments to give `process.execPath` to run `mesh-agent <args>`. */
export function selfArgs(args: string[]): string[] {
  return sea.isSea() ? args : [join(__dirname, 'main.js'), ...args];
}

/** `mesh-agent <args>` as a shell command line a user can paste. */
export function selfCommandLine(args: string[]): string {
  return [sea.isSea() ? process.execPath : `node ${join(__dirname, 'main.js')}`, ...args].join(' ');
}
