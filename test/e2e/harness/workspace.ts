// The workspace a user would have: a real checkpoint folder, a checkpoint whose tensor
// names carry markup (to prove names render as text), and one slow enough to cancel.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodeHeader, fromFloat32, openCheckpoint, TensorSpec } from '../../../server/src/checkpoint';
import { quantizeCheckpoint } from '../../../server/src/engine/run';
import { createBackend } from '../../../server/src/linalg/backend';
import { collectInputStatsWithInfo, DEFAULT_FULL_STAT_MAX_DIM } from '../../../server/src/model/collect';
import type { CalibrationInfo } from '../../../server/src/protocol/lsp_ext';
import { gaussian } from '../../../server/src/linalg/dense';
import { fixture } from '../../helpers';

export const XSS_NAME = 'model.layers.0.<script>document.title="pwned"</script>.weight';
export const XSS_META = '<img src=x onerror="document.title=\'pwned\'">';

export function makeWorkspace(dir: string): void {
  fs.mkdirSync(path.join(dir, 'stories260k'), { recursive: true });
  for (const f of ['model.safetensors', 'config.json'])
    fs.copyFileSync(fixture('real', 'stories260k', f), path.join(dir, 'stories260k', f));
  // The calibrate → evaluate loop runs on a copy under another name, which no other test uses.
  fs.mkdirSync(path.join(dir, CALIB_MODEL), { recursive: true });
  for (const f of ['model.safetensors', 'config.json'])
    fs.copyFileSync(fixture('real', 'stories260k', f), path.join(dir, CALIB_MODEL, f));
  const specs: TensorSpec[] = [
    { name: XSS_NAME, dtype: 'F32', shape: [4, 8] },
    { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'F16', shape: [8, 8] },
    { name: 'model.norm.weight', dtype: 'BF16', shape: [8] },
  ];
  const header = encodeHeader(specs, { format: 'pt', note: XSS_META });
  const data = new Uint8Array(4 * 8 * 4 + 8 * 8 * 2 + 8 * 2);
  const file = new Uint8Array(header.length + data.length);
  file.set(header);
  file.set(data, header.length);
  fs.writeFileSync(path.join(dir, 'markup.safetensors'), file);
  writeSlowCheckpoint(path.join(dir, 'slow'));
  writeShardedCheckpoint(path.join(dir, 'sharded'));
  // A header length pointing past the end of the file: the viewer reports it as broken.
  const broken = new Uint8Array(16);
  new DataView(broken.buffer).setBigUint64(0, 4096n, true);
  broken.set(new TextEncoder().encode('{"a":{'), 8);
  fs.writeFileSync(path.join(dir, BROKEN_FILE), broken);
}

export const BROKEN_FILE = 'broken.safetensors';
/** stories260K renamed: the checkpoint of the calibrate → evaluate test. */
export const CALIB_MODEL = 'tinystories-calib';
/** Twelve layers over two shards: even layers in the first, odd ones in the second. */
export const SHARDED_LAYERS = 12;
export const SHARD_1 = 'model-00001-of-00002.safetensors';

function writeShardedCheckpoint(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const weightMap: Record<string, string> = {};
  for (const [shard, file] of [
    [0, SHARD_1],
    [1, 'model-00002-of-00002.safetensors'],
  ] as const) {
    const specs: TensorSpec[] = [];
    for (let l = shard; l < SHARDED_LAYERS; l += 2) {
      for (const m of ['self_attn.q_proj', 'mlp.down_proj']) {
        specs.push({ name: `model.layers.${l}.${m}.weight`, dtype: 'F32', shape: [4, 4] });
      }
    }
    if (shard === 0) specs.push({ name: 'model.embed_tokens.weight', dtype: 'F32', shape: [8, 4] });
    for (const s of specs) weightMap[s.name] = file;
    const header = encodeHeader(specs);
    const bytes = specs.reduce((n, s) => n + 4 * s.shape.reduce((a, b) => a * b, 1), 0);
    const data = new Uint8Array(header.length + bytes);
    data.set(header);
    fs.writeFileSync(path.join(dir, file), data);
  }
  const index = JSON.stringify({ metadata: {}, weight_map: weightMap }, null, 2);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), index);
}

/**
 * A calibrated LoftQ run of the stories260k checkpoint in the workspace, done by the engine
 * itself: input statistics from the real model's forward pass over fixed token sequences,
 * then quantize with them. Its report carries output errors for the heatmap to show.
 */
export async function writeCalibratedRun(ws: string, outName: string): Promise<string> {
  const model = path.join(ws, 'stories260k');
  const ck = await openCheckpoint(path.join(model, 'model.safetensors'));
  const backend = await createBackend('cpu');
  let seed = 7;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648);
  const sequences = Array.from({ length: 4 }, () => Array.from({ length: 32 }, () => 1 + (next() % 511)));
  const { stats } = await collectInputStatsWithInfo(ck, sequences, { backend });
  const info: CalibrationInfo = {
    source: 'tokens',
    sequences: 4,
    tokens: 128,
    fullStatMaxDim: DEFAULT_FULL_STAT_MAX_DIM,
    ridge: 0.01,
  };
  const out = path.join(model, outName);
  const settings = { bits: 4, rank: 8, iters: 3, quantizer: 'nf' as const, blockSize: 64 };
  const { reportPath } = await quantizeCheckpoint(path.join(model, 'model.safetensors'), {
    out,
    settings,
    workers: 'in-thread',
    backend: 'cpu',
    calibration: { stats, info },
  });
  return reportPath;
}

/** Eight 2048² BF16 matrices (64 MB): at rank 64 and 10 iterations a run takes several
 *  seconds per matrix on two cores, long enough to cancel half-way. */
export const SLOW_MATRICES = 8;
function writeSlowCheckpoint(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const n = 2048;
  const specs: TensorSpec[] = Array.from({ length: SLOW_MATRICES }, (_, i) => ({
    name: `model.layers.${i}.self_attn.q_proj.weight`,
    dtype: 'BF16',
    shape: [n, n],
  }));
  const header = encodeHeader(specs, { format: 'pt' });
  const fd = fs.openSync(path.join(dir, 'model.safetensors'), 'w');
  try {
    fs.writeSync(fd, header);
    for (let i = 0; i < SLOW_MATRICES; i++)
      fs.writeSync(
        fd,
        fromFloat32(
          'BF16',
          gaussian(n * n, i + 1).map((v) => v * 0.02),
        ),
      );
  } finally {
    fs.closeSync(fd);
  }
}
