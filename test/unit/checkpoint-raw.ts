// Builds safetensors files byte by byte, independently of our writer, so reader tests
// do not depend on the code under test to make their inputs.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as assert from 'node:assert/strict';
import { CheckpointError } from '../../server/src/checkpoint';

/** 8-byte LE length (or `length` when given) + header text + data. */
export function rawFile(header: string | object, data: Uint8Array | number = 0, length?: bigint): Uint8Array {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const body = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + text.length + body.length);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(text.length), true);
  out.set(text, 8);
  out.set(body, 8 + text.length);
  return out;
}

export function put(dir: string, name: string, bytes: Uint8Array | string): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, bytes);
  return p;
}

/** Awaits a rejection that is a CheckpointError of `kind` whose one-line message names
 *  the file (and the tensor, when given) and matches `problem`. */
export async function rejects(
  p: Promise<unknown>,
  kind: string,
  file: string,
  problem: RegExp,
  tensor?: string,
): Promise<CheckpointError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  assert.ok(
    err instanceof CheckpointError,
    `expected CheckpointError(${kind}), got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`,
  );
  assert.equal(err.kind, kind, err.message);
  assert.equal(err.file, file, err.message);
  assert.ok(err.message.startsWith(`${file}: `), `message names the file: ${err.message}`);
  assert.ok(!err.message.includes('\n'), 'one line');
  assert.match(err.problem, problem, err.message);
  if (tensor !== undefined) {
    assert.equal(err.tensor, tensor, err.message);
    assert.ok(err.message.includes(`'${tensor}'`), `message names the tensor: ${err.message}`);
  }
  return err;
}
