// safetensors dtypes, their sizes, and conversion of the float ones to float32.

export const DTYPE_SIZE = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
} as const;

export type DType = keyof typeof DTYPE_SIZE;

export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, s);
}

/** Float dtypes the engine computes on (converted to float32). */
export const FLOAT_DTYPES: ReadonlySet<string> = new Set(['F32', 'F16', 'BF16']);

// F16 → F32 bit patterns for all 65,536 halves, built once. Works on bits so that every
// value is exact: subnormals, ±0, ±Inf, and NaN payloads (shifted into place) included.
let f16Table: Uint32Array | undefined;
function f16ToF32Table(): Uint32Array {
  if (f16Table) return f16Table;
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const e = (h >> 10) & 0x1f;
    let m = h & 0x3ff;
    if (e === 31) t[h] = sign | 0x7f800000 | (m << 13);
    else if (e !== 0) t[h] = sign | ((e - 15 + 127) << 23) | (m << 13);
    else if (m === 0) t[h] = sign;
    else {
      // Subnormal: normalise the mantissa; the value m·2^-24 is exact in float32.
      let exp = 127 - 15 + 1;
      while ((m & 0x400) === 0) {
        m <<= 1;
        exp--;
      }
      t[h] = sign | (exp << 23) | ((m & 0x3ff) << 13);
    }
  }
  return (f16Table = t);
}

/** Converts little-endian F32/F16/BF16 bytes to float32 (exact: every value of these
 *  types is a float32), into `out` when given (as many values as `bytes` holds). */
export function toFloat32(dtype: string, bytes: Uint8Array, out?: Float32Array): Float32Array {
  if (!FLOAT_DTYPES.has(dtype)) throw new Error(`toFloat32: unsupported dtype ${dtype}`);
  const size = DTYPE_SIZE[dtype as DType];
  if (bytes.byteLength % size !== 0)
    throw new Error(`toFloat32: ${bytes.byteLength} bytes is not a whole number of ${dtype} values`);
  const n = bytes.byteLength / size;
  if (out && out.length !== n) throw new Error(`toFloat32: ${out.length} outputs for ${n} values`);
  const result = out ?? new Float32Array(n);
  if (dtype === 'F32') {
    new Uint8Array(result.buffer, result.byteOffset, result.byteLength).set(bytes);
    return result;
  }
  // 16-bit values read in place when aligned (a fresh or reused read buffer is).
  const u16 =
    bytes.byteOffset % 2 === 0
      ? new Uint16Array(bytes.buffer, bytes.byteOffset, n)
      : new Uint16Array(bytes.slice().buffer);
  const u32 = new Uint32Array(result.buffer, result.byteOffset, n);
  if (dtype === 'BF16') {
    for (let i = 0; i < n; i++) u32[i] = u16[i] << 16;
  } else {
    const t = f16ToF32Table();
    for (let i = 0; i < n; i++) u32[i] = t[u16[i]];
  }
  return result;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → bfloat16 bits, round to nearest even (as torch does); NaN stays NaN. */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  return bf16OfBits(u32[0]);
}

/** The same, from the float32's bit pattern. */
function bf16OfBits(b: number): number {
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
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

/** f32ToBf16Bits over whole arrays, on the bits directly (no per-value round trip through
 *  a scratch array, which made this the slowest step of writing a matrix). */
function bitsToBf16(bits: Uint32Array, out: Uint16Array): void {
  for (let i = 0; i < bits.length; i++) out[i] = bf16OfBits(bits[i]);
}

/** Encodes float32 values into the given float dtype's little-endian bytes. */
export function fromFloat32(dtype: string, x: Float32Array): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
  const out = new Uint16Array(x.length);
  if (dtype === 'BF16') bitsToBf16(new Uint32Array(x.buffer, x.byteOffset, x.length), out);
  else if (dtype === 'F16') for (let i = 0; i < x.length; i++) out[i] = f32ToF16Bits(x[i]);
  else throw new Error(`fromFloat32: unsupported dtype ${dtype}`);
  return new Uint8Array(out.buffer);
}

/** Rounds float32 values through a float dtype and back (what a reader of the file will see). */
export function roundTrip(dtype: string, x: Float32Array): Float32Array {
  return dtype === 'F32' ? x : toFloat32(dtype, fromFloat32(dtype, x));
}
