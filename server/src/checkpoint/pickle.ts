// Pickle checkpoints (torch.save: .bin/.pt/.pth/.ckpt) can run arbitrary code when
// loaded. We never unpickle; we recognise them by name or by their first bytes and say
// how to convert.

import * as path from 'node:path';
import { CheckpointError } from './errors';

export const PICKLE_EXTENSIONS = ['.bin', '.pt', '.pth', '.ckpt', '.pkl', '.pickle'];

export function isPickleName(file: string): boolean {
  return PICKLE_EXTENSIONS.includes(path.extname(file).toLowerCase());
}

/** Pickle protocol 2–5 (`\x80\x02`…`\x80\x05`) or a zip archive (`PK\x03\x04`, what
 *  torch.save writes since 1.6). */
export function hasPickleMagic(first: Uint8Array): boolean {
  if (first[0] === 0x80 && first[1] >= 2 && first[1] <= 5) return true;
  return first[0] === 0x50 && first[1] === 0x4b && first[2] === 0x03 && first[3] === 0x04;
}

export function pickleMessage(file: string): CheckpointError {
  return new CheckpointError(
    'pickle',
    file,
    'is a pickle checkpoint, which can run code when loaded and is never opened here; ' +
      'convert it to safetensors first, e.g. ' +
      `python -c "import transformers as t; t.AutoModelForCausalLM.from_pretrained('DIR')` +
      `.save_pretrained('OUT', safe_serialization=True)"`,
  );
}
