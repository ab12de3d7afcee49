// One build script for every bundle: the extension client, the language server, the CLI,
// the worker, the tools, the webviews (browser) and — with --tests — the test files.
import * as esbuild from 'esbuild';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { createRequire } from 'node:module';
import { buildNative } from './server/native/build.mjs';

const require = createRequire(import.meta.url);
const args = new Set(process.argv.slice(2));
const production = args.has('--production');

const pkg = JSON.parse(readFileSync('package.json', 'utf8'));

// The element-wise kernels (AssemblyScript → WebAssembly SIMD), embedded in every bundle
// that uses them as base64: no file to find next to the bundle, in a worker or a test.
async function compileKernels() {
  const asc = (await import('assemblyscript/asc')).default;
  let wasm;
  const { error, stderr } = await asc.main(
    [
      'server/wasm/kernels.ts',
      '-O3',
      '--enable',
      'simd,threads',
      '--runtime',
      'stub',
      '--initialMemory',
      '1',
      // Shared, imported memory: helper threads run kernels on parts of one workspace
      // (server/src/kernels/pool.ts). 65536 pages = wasm32's 4 GiB.
      '--maximumMemory',
      '65536',
      '--sharedMemory',
      '--importMemory',
      '--outFile',
      'kernels.wasm',
    ],
    {
      writeFile(name, contents) {
        if (name.endsWith('.wasm')) wasm = contents;
      },
    },
  );
  if (error || !wasm) throw new Error(`AssemblyScript: ${error?.message ?? 'no output'}\n${stderr.toString()}`);
  return Buffer.from(wasm).toString('base64');
}
const kernelsBase64 = await compileKernels();

const nodeCommon = {
  define: { __LOFTQ_VERSION__: JSON.stringify(pkg.version), __LOFTQ_KERNELS__: JSON.stringify(kernelsBase64) },
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: !production,
  minify: production,
  logLevel: 'warning',
  // Python shipped in output folders (export/loftq_hqq.py) is embedded as text.
  loader: { '.py': 'text' },
  // Native / optional backends are loaded at run time only when installed.
  external: ['vscode', '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', 'webgpu'],
};

const nodeEntries = {
  client: 'client/src/extension.ts',
  server: 'server/src/lsp/main.ts',
  // dist/cli.js installs the signal handlers, then loads dist/cli-main.js (server/src/cli/entry.ts).
  cli: 'server/src/cli/entry.ts',
  'cli-main': 'server/src/cli/main.ts',
  worker: 'server/src/engine/worker.ts',
  'eval-worker': 'server/src/model/evalWorker.ts',
  'calib-worker': 'server/src/model/calibWorker.ts',
  'tokenize-worker': 'server/src/model/tokenizeWorker.ts',
  'gemm-worker': 'server/src/linalg/gemmWorker.ts',
  'planner-worker': 'server/src/lsp/plannerWorker.ts',
  bench: 'bench/bench.ts',
  'make-model': 'server/src/tools/make-model.ts',
  fuzz: 'server/src/tools/fuzz.ts',
  'registry-sync': 'server/src/tools/registry-sync.ts',
};

const present = Object.fromEntries(Object.entries(nodeEntries).filter(([, p]) => existsSync(p)));
mkdirSync('dist', { recursive: true });
// jsonc-parser's `main` is a UMD build whose internal requires esbuild cannot follow; bundle its ESM build.
const alias = { 'jsonc-parser': 'jsonc-parser/lib/esm/main.js' };

// The server, the CLI and every worker they start share one bundle, dist/loftq-runtime.js: tfjs,
// the kernels and the engine once instead of once per worker (the .vsix carried six copies). Each
// dist/<name>.js of them is a stub that starts its entry from it; an entry's modules are
// evaluated only when it starts (esbuild wraps required modules lazily).
const RUNTIME = ['server', 'cli-main', 'worker', 'eval-worker', 'calib-worker', 'tokenize-worker', 'gemm-worker'];
const shared = Object.entries(present).filter(([n]) => RUNTIME.includes(n));
const own = Object.fromEntries(Object.entries(present).filter(([n]) => !RUNTIME.includes(n)));
await esbuild.build({ ...nodeCommon, entryPoints: own, outdir: 'dist', banner: { js: '' }, alias });
await esbuild.build({
  ...nodeCommon,
  stdin: {
    contents:
      'const entries = {\n' +
      shared.map(([n, p]) => `  ${JSON.stringify(n)}: () => require(${JSON.stringify(`./${p}`)}),\n`).join('') +
      '};\nexports.start = (name) => entries[name]();\n',
    resolveDir: process.cwd(),
    sourcefile: 'loftq-runtime.js',
    loader: 'js',
  },
  outfile: 'dist/loftq-runtime.js',
  alias,
});
for (const [n] of shared) {
  writeFileSync(
    join('dist', `${n}.js`),
    `'use strict';\n// ${n}: its code is in loftq-runtime.js, shared by the server, the CLI and their workers.\n` +
      `require('./loftq-runtime.js').start(${JSON.stringify(n)});\n`,
  );
  rmSync(join('dist', `${n}.js.map`), { force: true });
}

// The native backend (optional: without a C compiler the engine runs on wasm).
const nativeNote = buildNative();
if (nativeNote) console.warn(nativeNote);

// The wasm backend fetches its binaries next to the bundle.
const wasmDir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
for (const f of readdirSync(wasmDir).filter((f) => f.endsWith('.wasm'))) cpSync(join(wasmDir, f), join('dist', f));

const webviewEntries = ['heatmap', 'viewer'].map((n) => [n, `webviews/src/${n}.ts`]).filter(([, p]) => existsSync(p));
if (webviewEntries.length) {
  await esbuild.build({
    entryPoints: Object.fromEntries(webviewEntries),
    bundle: true,
    platform: 'browser',
    target: 'es2022',
    format: 'iife',
    outdir: 'dist/webviews',
    sourcemap: !production,
    minify: production,
    logLevel: 'warning',
  });
}

if (args.has('--tests')) {
  const tests = [];
  const walk = (d) => {
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) {
        if (f !== 'fixtures' && f !== 'node_modules') walk(p);
      } else if (p.endsWith('.test.ts')) tests.push(p);
    }
  };
  walk('test');
  // The README screenshots script drives the e2e harness; it is built with the tests, never run by them.
  if (existsSync('test/e2e/screenshots.ts')) tests.push('test/e2e/screenshots.ts');
  await esbuild.build({
    ...nodeCommon,
    entryPoints: tests,
    outdir: 'out',
    outbase: '.',
    packages: 'external',
  });
}
