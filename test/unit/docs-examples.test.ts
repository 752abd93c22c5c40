// The agent configs and endpoints files that the operator guides show are accepted by the agent as printed.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadAgentConfig } from '../../src/agent';
import { readEndpointsFile } from '../../src/registry';
import { tempDir } from '../helpers/processes';

const DOCS = join(__dirname, '..', '..', '..', 'docs');
const GUIDES = ['vm.md', 'consul.md', 'nomad.md'];
/** An endpoints file maps service keys to lists; an agent config lists services as objects. */
const ENDPOINTS_FILE = /^services:\n {2}[a-z0-9.-]+:\n/m;

function yamlBlocks(file: string): { line: number; text: string }[] {
  const out: { line: number; text: string }[] = [];
  const lines = readFileSync(join(DOCS, file), 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```yaml') continue;
    const end = lines.indexOf('```', i + 1);
    out.push({ line: i + 2, text: `${lines.slice(i + 1, end).join('\n')}\n` });
    i = end;
  }
  return out;
}

describe('configs in the operator guides', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  for (const doc of GUIDES) {
    for (const { line, text } of yamlBlocks(doc)) {
      const file = join(tmp.dir, `${doc}-${line}.yaml`);
      if (ENDPOINTS_FILE.test(text)) {
        it(`${doc}:${line} is a valid endpoints file`, () => {
          writeFileSync(file, text);
          assert.ok(readEndpointsFile(file).size > 0);
        });
      } else {
        it(`${doc}:${line} is a valid agent config`, () => {
          writeFileSync(file, text);
          const config = loadAgentConfig({ file, env: {} });
          assert.ok(config.services.length > 0 || config.consul, 'the example configures something');
        });
      }
    }
  }

  it('finds the examples it checks', () => {
    assert.ok(GUIDES.flatMap(yamlBlocks).length >= 6, 'the guides show agent configs and endpoints files');
  });
});
