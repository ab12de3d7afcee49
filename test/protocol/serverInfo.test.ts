// `initialize` names the server and its version — package.json's, put into the bundle at
// build time (esbuild define), not an environment variable nobody sets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../helpers';
import { LspClient } from './lspClient';
import { workspace } from './support';

test('serverInfo carries the package version', async () => {
  const { version } = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8'));
  const { root } = workspace();
  const c = await LspClient.start({ root });
  try {
    assert.deepEqual(c.initializeResult?.serverInfo, { name: 'loftq-lens', version });
  } finally {
    await c.stop();
  }
});
