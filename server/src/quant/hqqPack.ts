// HQQLinear's W_q: the codes as a [groups, groupSize] matrix, packed by row blocks as hqq's
// BitPack does (hqq/core/bitpack.py of 0.2.8.post1): the rows are cut into 2 / 4 / 8 equal
// blocks for 4 / 2 / 1 bits and block j's code goes to bits (8 − b·(j+1)) … of the byte at the
// same (row, column) of the packed matrix; 3 bits pack 10 blocks into an int32 (block j at bit
// 27 − 3j) after padding the rows with zeros to a multiple of 10; 8 bits are stored as they are.

export interface HqqPacked {
  /** little-endian bytes */
  data: Uint8Array;
  dtype: 'U8' | 'I32';
  shape: [number, number];
}

/** Row blocks per packed row (3 bits: 10 blocks of a zero-padded matrix). */
function blocks(bits: number): number {
  switch (bits) {
    case 8:
      return 1;
    case 4:
      return 2;
    case 3:
      return 10;
    case 2:
      return 4;
    case 1:
      return 8;
    default:
      throw new RangeError(`HQQ packs 1, 2, 3, 4 or 8 bits, not ${bits}`);
  }
}

export function hqqPackingName(bits: number): string {
  blocks(bits);
  return bits === 3 ? '3bit_32' : `${bits}bit_u8`;
}

export function hqqPackedShape(groups: number, groupSize: number, bits: number): [number, number] {
  const m = blocks(bits);
  if (bits === 3) return [Math.ceil(groups / 10), groupSize];
  if (groups % m !== 0)
    throw new RangeError(`${bits}-bit HQQ packing needs a multiple of ${m} groups, not ${groups} (hqq drops the rest)`);
  return [groups / m, groupSize];
}

function checkCodes(length: number, groups: number, groupSize: number): void {
  if (length !== groups * groupSize) throw new RangeError(`${length} codes are not ${groups} groups of ${groupSize}`);
}

/** codes [groups, groupSize] row-major → W_q exactly as HQQLinear holds it (8bit_u8, 4bit_u8
 *  row halves, 2bit_u8 quarters, 1bit_u8 eighths, 3bit_32 int32 with rows zero-padded to a
 *  multiple of 10). */
export function hqqPack(codes: Uint8Array, groups: number, groupSize: number, bits: number): HqqPacked {
  checkCodes(codes.length, groups, groupSize);
  const shape = hqqPackedShape(groups, groupSize, bits);
  const cells = shape[0] * groupSize;
  if (bits === 8) return { data: codes.slice(), dtype: 'U8', shape };
  if (bits === 3) {
    const words = new Int32Array(cells);
    // Block j holds padded rows [j·step, (j+1)·step); rows past `groups` are the zero padding.
    for (let j = 0; j < 10; j++) {
      const first = j * cells,
        last = Math.min(codes.length, first + cells),
        shift = 27 - 3 * j;
      for (let i = first; i < last; i++) words[i - first] |= (codes[i] & 7) << shift;
    }
    return { data: new Uint8Array(words.buffer), dtype: 'I32', shape };
  }
  const m = 8 / bits,
    mask = (1 << bits) - 1;
  const data = new Uint8Array(cells);
  for (let j = 0; j < m; j++) {
    const base = j * cells,
      shift = 8 - bits * (j + 1);
    for (let i = 0; i < cells; i++) data[i] |= (codes[base + i] & mask) << shift;
  }
  return { data, dtype: 'U8', shape };
}

export function hqqUnpack(packed: HqqPacked, groups: number, groupSize: number, bits: number): Uint8Array {
  const shape = hqqPackedShape(groups, groupSize, bits);
  const cells = shape[0] * groupSize;
  const want = bits === 3 ? 'I32' : 'U8';
  if (packed.dtype !== want || packed.shape[0] !== shape[0] || packed.shape[1] !== shape[1])
    throw new RangeError(
      `${bits}-bit HQQ W_q for ${groups} groups of ${groupSize} is ${want} [${shape.join(', ')}], ` +
        `not ${packed.dtype} [${packed.shape.join(', ')}]`,
    );
  const size = bits === 3 ? 4 : 1;
  if (packed.data.length !== cells * size)
    throw new RangeError(`HQQ W_q of shape [${shape.join(', ')}] has ${packed.data.length} bytes`);
  const codes = new Uint8Array(groups * groupSize);
  if (bits === 8) {
    codes.set(packed.data);
    return codes;
  }
  if (bits === 3) {
    const d = packed.data,
      n = codes.length;
    for (let i = 0; i < cells; i++) {
      const p = 4 * i;
      const w = d[p] | (d[p + 1] << 8) | (d[p + 2] << 16) | (d[p + 3] << 24);
      for (let j = 0, at = i; j < 10 && at < n; j++, at += cells) codes[at] = (w >>> (27 - 3 * j)) & 7;
    }
    return codes;
  }
  const m = 8 / bits,
    mask = (1 << bits) - 1;
  for (let j = 0; j < m; j++) {
    const base = j * cells,
      shift = 8 - bits * (j + 1);
    for (let i = 0; i < cells; i++) codes[base + i] = (packed.data[i] >> shift) & mask;
  }
  return codes;
}
