// Every error code in the catalogue is documented in docs/errors.md, and nothing there is undocumented code.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ERROR_CATALOGUE, MeshError } from '../../src/errors';

const doc = readFileSync(join(__dirname, '..', '..', '..', 'docs', 'errors.md'), 'utf8');

describe('error catalogue', () => {
  it('documents every code with its retryable flag', () => {
    for (const [code, entry] of Object.entries(ERROR_CATALOGUE)) {
      const row = doc.split('\n').find((l) => l.startsWith(`| \`${code}\` |`));
      assert.ok(row, `${code} has a row in docs/errors.md`);
      assert.match(row, new RegExp(`^\\| \`${code}\` \\| ${entry.retryable ? 'yes' : 'no'} \\|`), `${code} retryable column`);
    }
  });

  it('has no documented code that the catalogue lacks', () => {
    for (const m of doc.matchAll(/^\| `(MESH_ERR_[A-Z_]+)` \|/gm)) assert.ok(m[1]! in ERROR_CATALOGUE, `${m[1]} is in src/errors.ts`);
  });

  it('keeps a code it does not know (from a newer peer) as not retryable instead of failing', () => {
    const e = new MeshError('MESH_ERR_FROM_THE_FUTURE' as never, 'x');
    assert.equal(e.code, 'MESH_ERR_FROM_THE_FUTURE');
    assert.equal(e.retryable, false);
  });
});
