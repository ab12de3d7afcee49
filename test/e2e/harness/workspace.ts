// The workspace a user would have: a real checkpoint folder, and a checkpoint whose tensor
// names carry markup (to prove names render as text).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodeHeader, TensorSpec } from '../../../server/src/checkpoint';
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
}
