// Packaging (issue 11.7): `npm run package` produces an installable .vsix — the entry points
// package.json names, the webview assets, the wasm backends, the schema — and no source maps,
// developer tools or demo checkpoint, under 4 MB (issue 26 §3).
// The end-to-end tier installs the same package into code-server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageVsix } from '../e2e/harness/vsix';
import { repoRoot, tempDir } from '../helpers';
import { zipList } from '../zipList';

test('npm run package: a .vsix with every file the manifest names, without source maps', { timeout: 300_000 }, () => {
  const stage = tempDir('loftq-vsix-');
  try {
    const vsix = packageVsix(stage);
    const entries = zipList(vsix);
    const names = new Set(entries.map((e) => e.name));
    const manifest = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8'));
    const inExt = (p: string) => `extension/${path.posix.normalize(p)}`;
    const needed = [
      'extension.vsixmanifest',
      inExt('package.json'),
      inExt('readme.md'),
      inExt(manifest.main),
      inExt(manifest.bin.loftq),
      // dist/cli.js only installs the signal handlers, then loads this one.
      inExt('dist/cli-main.js'),
      // The server and its workers are started by path, not imported: nothing else would catch their absence.
      inExt('dist/server.js'),
      inExt('dist/worker.js'),
      inExt('dist/gemm-worker.js'),
      inExt('dist/planner-worker.js'),
      inExt('dist/eval-worker.js'),
      inExt('dist/calib-worker.js'),
      // …which are stubs over the one shared bundle.
      inExt('dist/loftq-runtime.js'),
      inExt('dist/tokenize-worker.js'),
      inExt('dist/tfjs-backend-wasm.wasm'),
      // The native backend where this machine built it (a platform-specific package then).
      ...(fs.existsSync(path.join(repoRoot, 'dist', 'loftq_native.node')) ? [inExt('dist/loftq_native.node')] : []),
      inExt('dist/webviews/heatmap.js'),
      inExt('dist/webviews/heatmap.css'),
      inExt('dist/webviews/viewer.js'),
      inExt('dist/webviews/viewer.css'),
      ...manifest.contributes.jsonValidation.map((v: { url: string }) => inExt(v.url)),
      // The README's screenshots, so its relative image links work on the extension's page.
      ...[
        ...fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8').matchAll(/!\[[^\]]*\]\((docs\/images\/[^)]+)\)/g),
      ].map((m) => inExt(m[1])),
    ];
    for (const n of needed) assert.ok(names.has(n), `${n} is in the package (has: ${[...names].sort().join(', ')})`);
    const maps = entries.filter((e) => e.name.endsWith('.map'));
    assert.deepEqual(
      maps.map((e) => e.name),
      [],
      'no source maps',
    );
    const sources = entries.filter((e) => /^extension\/(node_modules|client|server|test|webviews)\//.test(e.name));
    assert.deepEqual(
      sources.map((e) => e.name),
      [],
      'no sources or dependency folders (everything is bundled)',
    );
    // Only what the extension runs (issue 26 §3): no developer tools, no demo checkpoint.
    const extra = entries.filter((e) =>
      /^extension\/(dist\/(fuzz|bench|make-model|registry-sync)\.js|examples\/)/.test(e.name),
    );
    assert.deepEqual(
      extra.map((e) => e.name),
      [],
      'no developer tools or examples in the package',
    );
    const total = entries.reduce((s, e) => s + e.size, 0);
    assert.ok(total < 30e6, `unpacked size ${(total / 1e6).toFixed(1)} MB`);
    // tfjs and the engine once: no stub of the shared bundle carries code of its own.
    const stubs = entries.filter((e) =>
      /^extension\/dist\/(server|worker|eval-worker|calib-worker|gemm-worker)\.js$/.test(e.name),
    );
    assert.equal(stubs.length, 5);
    for (const s of stubs) assert.ok(s.size < 1000, `${s.name} is ${s.size} bytes`);
    const packed = fs.statSync(vsix).size;
    assert.ok(packed < 4e6, `the .vsix is ${(packed / 1e6).toFixed(2)} MB (at most 4 MB)`);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
});
