// Packs b-bit codes (b in 2, 3, 4, 8) little-endian into bytes: code i occupies bits
// [i·b, (i+1)·b) of the stream, least significant bit first. 3-bit codes therefore
// straddle byte boundaries (8 codes per 3 bytes); the last byte is zero-padded.

export function packedLength(count: number, bits: number): number {
  return Math.ceil((count * bits) / 8);
}

export function packCodes(codes: Uint8Array, bits: number): Uint8Array {
  const out = new Uint8Array(packedLength(codes.length, bits));
  if (bits === 8) {
    out.set(codes);
    return out;
  }
  let bitPos = 0;
  for (let i = 0; i < codes.length; i++, bitPos += bits) {
    const byte = bitPos >> 3,
      shift = bitPos & 7;
    const v = codes[i] << shift;
    out[byte] |= v & 0xff;
    if (shift + bits > 8) out[byte + 1] |= v >> 8;
  }
  return out;
}

export function unpackCodes(packed: Uint8Array, bits: number, count: number): Uint8Array {
  if (bits === 8) return packed.slice(0, count);
  const out = new Uint8Array(count);
  const mask = (1 << bits) - 1;
  let bitPos = 0;
  for (let i = 0; i < count; i++, bitPos += bits) {
    const byte = bitPos >> 3,
      shift = bitPos & 7;
    const word = packed[byte] | ((packed[byte + 1] ?? 0) << 8);
    out[i] = (word >> shift) & mask;
  }
  return out;
}
