// .ci/run adds bookworm-backports (Mesa 25's software Vulkan for the webgpu tests) from the
// machine's own apt source, so the repository names no package mirror (issue 27.16):
// .ci/backports-source renames the suite of the configured bookworm entry, deb822 or one-line.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot, tempDir } from '../helpers';

const SCRIPT = path.join(repoRoot, '.ci', 'backports-source');

function backports(files: Record<string, string>): { status: number | null; stdout: string } {
  const dir = tempDir();
  try {
    fs.mkdirSync(path.join(dir, 'sources.list.d'));
    for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
    const r = spawnSync('bash', [SCRIPT], { env: { ...process.env, APT_DIR: dir }, encoding: 'utf8' });
    return { status: r.status, stdout: r.stdout };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('.ci/run and .ci/backports-source name no package mirror', () => {
  for (const f of ['run', 'backports-source']) {
    const text = fs.readFileSync(path.join(repoRoot, '.ci', f), 'utf8');
    assert.doesNotMatch(text, /[a-z]+:\/\/|deb\.debian\.org|debian\.org/, `.ci/${f}`);
  }
});

test('.ci/backports-source: the configured bookworm entry with its suite renamed, deb822 or one-line', () => {
  const stanza = (uri: string, suites: string) =>
    `Types: deb\nURIs: ${uri}\nSuites: ${suites}\nComponents: main contrib\nSigned-By: /usr/share/keyrings/k.gpg\n`;
  // deb822 (Debian 12's default): the security stanza first, a third-party one, then the mirror's.
  const deb822 = backports({
    'sources.list.d/debian.sources': [
      stanza('http://mirror.example/debian-security', 'bookworm-security'),
      stanza('http://mirror.example/debian', 'bookworm bookworm-updates'),
    ].join('\n'),
    'sources.list.d/other.sources': stanza('https://vendor.example/apt', 'nodistro'),
  });
  assert.equal(deb822.status, 0);
  assert.equal(deb822.stdout, stanza('http://mirror.example/debian', 'bookworm-backports'));
  // One-line entries, with options; a bookworm-security line is not the one.
  const oneLine = backports({
    'sources.list': [
      '# comment',
      'deb http://mirror.example/debian-security bookworm-security main',
      'deb [signed-by=/k.gpg arch=amd64] http://mirror.example/debian bookworm main non-free-firmware',
      'deb http://mirror.example/debian bookworm-updates main',
    ].join('\n'),
  });
  assert.equal(oneLine.status, 0);
  assert.equal(
    oneLine.stdout,
    'deb [signed-by=/k.gpg arch=amd64] http://mirror.example/debian bookworm-backports main non-free-firmware\n',
  );
  // Nothing lists bookworm: nothing printed, exit 1 (.ci/run then skips software Vulkan).
  const none = backports({ 'sources.list': 'deb http://mirror.example/debian trixie main\n' });
  assert.equal(none.status, 1);
  assert.equal(none.stdout, '');
});
