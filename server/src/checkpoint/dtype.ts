// safetensors dtypes, their sizes, and conversion of the float ones to float32.

export const DTYPE_SIZE = {
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1,
  U64: 8, U32: 4, U16: 2, U8: 1,
  BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
} as const;

export type DType = keyof typeof DTYPE_SIZE;

export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, s);
}

/** Float dtypes the engine computes on (converted to float32). */
export const FLOAT_DTYPES: ReadonlySet<string> = new Set(['F32', 'F16', 'BF16']);

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Converts little-endian F32/F16/BF16 bytes to float32. */
export function toFloat32(dtype: string, bytes: Uint8Array): Float32Array {
  const n = bytes.byteLength / DTYPE_SIZE[dtype as DType];
  if (dtype === 'F32') {
    const out = new Float32Array(n);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const u16 = new Uint16Array(n);
  new Uint8Array(u16.buffer).set(bytes);
  if (dtype === 'BF16') {
    const u32 = new Uint32Array(n);
    for (let i = 0; i < n; i++) u32[i] = u16[i] << 16;
    return new Float32Array(u32.buffer);
  }
  if (dtype === 'F16') {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = f16ToF32(u16[i]);
    return out;
  }
  throw new Error(`toFloat32: unsupported dtype ${dtype}`);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → bfloat16 bits, round to nearest even (as torch does); NaN stays NaN. */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 → IEEE half bits, round to nearest even. */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) {
    r++;
    if (r === 0x400) { r = 0; e++; if (e >= 0x1f) return sign | 0x7c00; }
  }
  return sign | (e << 10) | r;
}

/** Encodes float32 values into the given float dtype's little-endian bytes. */
export function fromFloat32(dtype: string, x: Float32Array): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
  const out = new Uint16Array(x.length);
  if (dtype === 'BF16') for (let i = 0; i < x.length; i++) out[i] = f32ToBf16Bits(x[i]);
  else if (dtype === 'F16') for (let i = 0; i < x.length; i++) out[i] = f32ToF16Bits(x[i]);
  else throw new Error(`fromFloat32: unsupported dtype ${dtype}`);
  return new Uint8Array(out.buffer);
}

/** Rounds float32 values through a float dtype and back (what a reader of the file will see). */
export function roundTrip(dtype: string, x: Float32Array): Float32Array {
  return dtype === 'F32' ? x : toFloat32(dtype, fromFloat32(dtype, x));
}
