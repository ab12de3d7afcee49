// The workspace a user would have: a real checkpoint folder, a checkpoint whose tensor
// names carry markup (to prove names render as text), and one slow enough to cancel.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodeHeader, fromFloat32, TensorSpec } from '../../../server/src/checkpoint';
import { gaussian } from '../../../server/src/linalg/dense';
import { fixture } from '../../helpers';

export const XSS_NAME = 'model.layers.0.<script>document.title="pwned"</script>.weight';
export const XSS_META = '<img src=x onerror="document.title=\'pwned\'">';

export function makeWorkspace(dir: string): void {
  fs.mkdirSync(path.join(dir, 'stories260k'), { recursive: true });
  for (const f of ['model.safetensors', 'config.json']) fs.copyFileSync(fixture('real', 'stories260k', f), path.join(dir, 'stories260k', f));
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
}

/** Eight 2048² BF16 matrices (64 MB): at rank 64 and 10 iterations a run takes several
 *  seconds per matrix on two cores, long enough to cancel half-way. */
export const SLOW_MATRICES = 8;
function writeSlowCheckpoint(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const n = 2048;
  const specs: TensorSpec[] = Array.from({ length: SLOW_MATRICES }, (_, i) => ({ name: `model.layers.${i}.self_attn.q_proj.weight`, dtype: 'BF16', shape: [n, n] }));
  const header = encodeHeader(specs, { format: 'pt' });
  const fd = fs.openSync(path.join(dir, 'model.safetensors'), 'w');
  try {
    fs.writeSync(fd, header);
    for (let i = 0; i < SLOW_MATRICES; i++) fs.writeSync(fd, fromFloat32('BF16', gaussian(n * n, i + 1).map((v) => v * 0.02)));
  } finally {
    fs.closeSync(fd);
  }
}
