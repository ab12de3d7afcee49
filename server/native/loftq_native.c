// The native backend (linalg/nativeBackend.ts): single-precision products of the one shape
// the engine issues — a held matrix A (rows × cols, row-major) times a block B (cols × n,
// row-major) — with AVX-512 or AVX2+FMA when the CPU has them and portable C otherwise.
// WebAssembly SIMD is 128 bits wide and has no fused multiply-add: on a CPU with AVX-512
// the same product runs about four times faster here.
//
// Layout: B is packed into strips of 16 columns (cols × 16 each, zero-padded), read in
// slices of KC rows that stay in cache while every MR-row panel of A passes over them; A is
// read in place, MR rows at a time. Work is split by row panels over `threads` threads
// (the calling one included). Built by esbuild.mjs with the system C compiler; absent, the
// engine runs on wasm.

#define NAPI_VERSION 8
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define LOFTQ_X86 1
#endif

enum { MR = 6, STRIP = 16, KC = 256, MAX_THREADS = 256 };

typedef enum { ISA_GENERIC = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 } Isa;
static const char *const ISA_NAMES[] = {"generic", "avx2", "avx512"};

static int isaSupported(Isa isa) {
  if (isa == ISA_GENERIC) return 1;
#ifdef LOFTQ_X86
  __builtin_cpu_init();
  if (isa == ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == ISA_AVX512) return __builtin_cpu_supports("avx512f");
#endif
  return 0;
}

static Isa bestIsa(void) {
  if (isaSupported(ISA_AVX512)) return ISA_AVX512;
  if (isaSupported(ISA_AVX2)) return ISA_AVX2;
  return ISA_GENERIC;
}

/** One MR-row panel times `kc` rows of consecutive strips. `rowsA[r]` points at row r of A
 *  (from the slice's first column); `b` at the first strip's slice (strips are `stripStride`
 *  floats apart); c gets mr × nc values (+= when `add`). */
typedef void Kernel(const float *const *rowsA, const float *b, size_t stripStride, int kc, float *c, size_t ldc,
                    int mr, int nc, int add);

/** Writes an MR × width tile of results into C: only the mr × nc part that exists. */
static void storeTile(const float *tile, int width, float *c, size_t ldc, int mr, int nc, int add) {
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nc; j++) c[r * ldc + j] = add ? c[r * ldc + j] + tile[r * width + j] : tile[r * width + j];
}

static void kernelGeneric(const float *const *rowsA, const float *b, size_t stripStride, int kc, float *c,
                          size_t ldc, int mr, int nc, int add) {
  (void)stripStride;
  float acc[MR][STRIP] = {{0}};
  for (int p = 0; p < kc; p++) {
    const float *bp = b + (size_t)p * STRIP;
    for (int r = 0; r < MR; r++) {
      const float a = rowsA[r][p];
      for (int j = 0; j < STRIP; j++) acc[r][j] += a * bp[j];
    }
  }
  storeTile(&acc[0][0], STRIP, c, ldc, mr, nc, add);
}

#ifdef LOFTQ_X86
__attribute__((target("avx2,fma"))) static void kernelAvx2(const float *const *rowsA, const float *b,
                                                            size_t stripStride, int kc, float *c, size_t ldc, int mr,
                                                            int nc, int add) {
  (void)stripStride;
  __m256 acc[MR][2];
  for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_loadu_ps(b + (size_t)p * STRIP), b1 = _mm256_loadu_ps(b + (size_t)p * STRIP + 8);
    for (int r = 0; r < MR; r++) {
      const __m256 a = _mm256_broadcast_ss(rowsA[r] + p);
      acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
    }
  }
  if (mr == MR && nc == STRIP) {
    for (int r = 0; r < MR; r++) {
      float *cr = c + r * ldc;
      if (add) {
        acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_loadu_ps(cr));
        acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_loadu_ps(cr + 8));
      }
      _mm256_storeu_ps(cr, acc[r][0]);
      _mm256_storeu_ps(cr + 8, acc[r][1]);
    }
    return;
  }
  float tile[MR * STRIP];
  for (int r = 0; r < MR; r++) {
    _mm256_storeu_ps(tile + r * STRIP, acc[r][0]);
    _mm256_storeu_ps(tile + r * STRIP + 8, acc[r][1]);
  }
  storeTile(tile, STRIP, c, ldc, mr, nc, add);
}

// AVX-512: NV strips (16 columns each) per call, 6 × NV accumulators; NV = 4 fills 24 of
// the 32 registers and keeps the FMA units busy, narrower variants cover the last strips.
#define KERNEL_AVX512(NV)                                                                               \
  __attribute__((target("avx512f"))) static void kernelAvx512x##NV(                                     \
      const float *const *rowsA, const float *b, size_t stripStride, int kc, float *c, size_t ldc, int mr, \
      int nc, int add) {                                                                                \
    __m512 acc[MR][NV];                                                                                 \
    for (int r = 0; r < MR; r++)                                                                        \
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();                                     \
    for (int p = 0; p < kc; p++) {                                                                      \
      __m512 bv[NV];                                                                                    \
      for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + v * stripStride + (size_t)p * STRIP);    \
      for (int r = 0; r < MR; r++) {                                                                    \
        const __m512 a = _mm512_set1_ps(rowsA[r][p]);                                                   \
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(a, bv[v], acc[r][v]);                  \
      }                                                                                                 \
    }                                                                                                   \
    for (int r = 0; r < mr; r++)                                                                        \
      for (int v = 0; v < NV; v++) {                                                                    \
        const int left = nc - v * STRIP;                                                                \
        if (left <= 0) break;                                                                           \
        const __mmask16 m = left >= STRIP ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);         \
        float *cr = c + r * ldc + v * STRIP;                                                            \
        __m512 x = acc[r][v];                                                                           \
        if (add) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, cr));                                    \
        _mm512_mask_storeu_ps(cr, m, x);                                                                \
      }                                                                                                 \
  }
KERNEL_AVX512(1)
KERNEL_AVX512(2)
KERNEL_AVX512(3)
KERNEL_AVX512(4)
#endif

// ---- Buffers ------------------------------------------------------------------------------
// Fresh pages are costly (a page fault each, and sandboxed kernels make that 10–15 µs: a
// 32 MB copy into new memory measured 120 ms against 5 ms into touched memory), and the
// engine asks for the same sizes over and over (the residual and its transpose every LoftQ
// iteration, the packed block of every product). Freed buffers are kept for reuse — a few,
// of bounded total size, the least recently returned going first — instead of going back
// to the system.

enum { CACHE_SLOTS = 8 };
static const size_t CACHE_MAX_BYTES = (size_t)1 << 30;
static pthread_mutex_t cacheLock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  void *p;
  size_t bytes;
  uint64_t stamp;
} cache[CACHE_SLOTS];

/** A 64-byte aligned buffer of at least `bytes` (its capacity in *capacity), or NULL. */
static void *takeBuffer(size_t bytes, size_t *capacity) {
  bytes = (bytes + 63) / 64 * 64;
  if (bytes == 0) bytes = 64;
  int best = -1;
  pthread_mutex_lock(&cacheLock);
  // The smallest that fits, if it is not more than twice the request.
  for (int i = 0; i < CACHE_SLOTS; i++)
    if (cache[i].p && cache[i].bytes >= bytes && cache[i].bytes / 2 <= bytes &&
        (best < 0 || cache[i].bytes < cache[best].bytes))
      best = i;
  void *p = NULL;
  if (best >= 0) {
    p = cache[best].p;
    *capacity = cache[best].bytes;
    cache[best].p = NULL;
  }
  pthread_mutex_unlock(&cacheLock);
  if (!p) {
    p = aligned_alloc(64, bytes);
    *capacity = bytes;
  }
  return p;
}

static void giveBuffer(void *p, size_t capacity) {
  if (!p) return;
  if (capacity > CACHE_MAX_BYTES) {
    free(p);
    return;
  }
  static uint64_t clock;
  void *evicted[CACHE_SLOTS];
  int nEvicted = 0;
  pthread_mutex_lock(&cacheLock);
  // Room by evicting the least recently returned buffers: a free slot, and the bound kept.
  for (;;) {
    size_t total = capacity;
    int freeSlot = -1, oldest = -1;
    for (int i = 0; i < CACHE_SLOTS; i++) {
      if (!cache[i].p) {
        if (freeSlot < 0) freeSlot = i;
        continue;
      }
      total += cache[i].bytes;
      if (oldest < 0 || cache[i].stamp < cache[oldest].stamp) oldest = i;
    }
    if (freeSlot >= 0 && total <= CACHE_MAX_BYTES) {
      cache[freeSlot].p = p;
      cache[freeSlot].bytes = capacity;
      cache[freeSlot].stamp = ++clock;
      break;
    }
    evicted[nEvicted++] = cache[oldest].p;
    cache[oldest].p = NULL;
  }
  pthread_mutex_unlock(&cacheLock);
  for (int i = 0; i < nEvicted; i++) free(evicted[i]);
}

// ---- Products -----------------------------------------------------------------------------

typedef struct {
  const float *a;
  size_t rows, cols, n, strips;
  const float *packed; // strips × cols × STRIP
  float *out;
  size_t panel0, panel1; // row panels [panel0, panel1) of this part
  Isa isa;
} Part;

static void runPart(const Part *w) {
  const size_t stripStride = w->cols * STRIP;
  for (size_t p0 = 0; p0 < w->cols; p0 += KC) {
    const int kc = (int)(w->cols - p0 < KC ? w->cols - p0 : KC);
    const int add = p0 > 0;
    for (size_t ip = w->panel0; ip < w->panel1; ip++) {
      const size_t row0 = ip * MR;
      const int mr = (int)(w->rows - row0 < MR ? w->rows - row0 : MR);
      // Rows past the end repeat the last one: computed, never stored.
      const float *rowsA[MR];
      for (int r = 0; r < MR; r++) rowsA[r] = w->a + (row0 + (size_t)(r < mr ? r : mr - 1)) * w->cols + p0;
      float *c = w->out + row0 * w->n;
      for (size_t s = 0; s < w->strips;) {
        const float *b = w->packed + s * stripStride + p0 * STRIP;
        const size_t col0 = s * STRIP;
        int nv = 1;
        Kernel *k = kernelGeneric;
#ifdef LOFTQ_X86
        if (w->isa == ISA_AVX512) {
          nv = (int)(w->strips - s < 4 ? w->strips - s : 4);
          k = nv == 4 ? kernelAvx512x4 : nv == 3 ? kernelAvx512x3 : nv == 2 ? kernelAvx512x2 : kernelAvx512x1;
        } else if (w->isa == ISA_AVX2) {
          k = kernelAvx2;
        }
#endif
        const size_t width = w->n - col0 < (size_t)nv * STRIP ? w->n - col0 : (size_t)nv * STRIP;
        k(rowsA, b, stripStride, kc, c + col0, w->n, mr, (int)width, add);
        s += (size_t)nv;
      }
    }
  }
}

static void *runPartThread(void *arg) {
  runPart((const Part *)arg);
  return NULL;
}

/** out (rows × n) = A (rows × cols) · B (cols × n). Returns 0, or -1 when memory ran out. */
static int multiply(const float *a, size_t rows, size_t cols, const float *b, size_t n, float *out, int threads,
                    Isa isa) {
  if (rows == 0 || n == 0) return 0;
  if (cols == 0) {
    memset(out, 0, rows * n * sizeof(float));
    return 0;
  }
  const size_t strips = (n + STRIP - 1) / STRIP;
  size_t packedCapacity;
  float *packed = takeBuffer(strips * cols * STRIP * sizeof(float), &packedCapacity);
  if (!packed) return -1;
  for (size_t s = 0; s < strips; s++) {
    const size_t col0 = s * STRIP, width = n - col0 < STRIP ? n - col0 : STRIP;
    float *dst = packed + s * cols * STRIP;
    for (size_t p = 0; p < cols; p++, dst += STRIP) {
      memcpy(dst, b + p * n + col0, width * sizeof(float));
      if (width < STRIP) memset(dst + width, 0, (STRIP - width) * sizeof(float));
    }
  }
  const size_t panels = (rows + MR - 1) / MR;
  size_t parts = threads < 1 ? 1 : (size_t)threads;
  if (parts > MAX_THREADS) parts = MAX_THREADS;
  if (parts > panels) parts = panels;
  Part work[MAX_THREADS];
  pthread_t ids[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  for (size_t i = 0; i < parts; i++) {
    work[i] = (Part){a, rows, cols, n, strips, packed, out, panels * i / parts, panels * (i + 1) / parts, isa};
    if (i > 0) started[i] = pthread_create(&ids[i], NULL, runPartThread, &work[i]) == 0;
  }
  // A thread that could not start leaves its part to this one.
  runPart(&work[0]);
  for (size_t i = 1; i < parts; i++) {
    if (started[i]) pthread_join(ids[i], NULL);
    else runPart(&work[i]);
  }
  giveBuffer(packed, packedCapacity);
  return 0;
}

// ---- Element-wise kernels -------------------------------------------------------------------
// The two hottest passes of server/wasm/kernels.ts, on the same WebAssembly memory and with
// the same byte-offset arguments, so a workspace's kernel call goes here unchanged
// (kernels/native.ts). The quantizer follows the wasm kernel's float rules exactly — its codes,
// values and residuals are bit-identical (PEFT's rules, tested); this file is compiled
// without floating-point contraction so no multiply-add is fused behind our back.

enum { CELLS = 4096, AMBIGUOUS = 0xffff };
static const double HALF_CELLS = 2048.0;

/** Index of the table entry nearest v: float32 distances, the lower index on ties. */
static int nearestCode(const float *table, int len, float v) {
  const int last = len - 1;
  if (!(v > table[0])) return 0;
  if (v >= table[last]) return last;
  int lo = 0, hi = last;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (table[mid] <= v) lo = mid;
    else hi = mid;
  }
  const float dl = v - table[lo], dh = table[hi] - v;
  return dh < dl ? hi : lo;
}

static inline int cellOf(float x, double toCell) {
  const double v = (double)x * toCell + HALF_CELLS;
  return v > 0 ? (v < (double)CELLS ? (int)v : CELLS) : 0;
}

/** One element of a block with a non-zero scale; returns its residual. */
static inline float quantizeOne(float x, float scale, double toCell, const float *table, int tableLen,
                                const uint16_t *cells, uint8_t *code, float *value, float w, float *residual) {
  int c = cells[cellOf(x, toCell)];
  if (c == AMBIGUOUS) c = nearestCode(table, tableLen, x / scale);
  *code = (uint8_t)c;
  const float q = table[c] * scale;
  *value = q;
  const float d = w - q;
  *residual = d;
  return d;
}

#ifdef LOFTQ_X86
/** Sixteen elements at once (`m` selects the ones that exist); lanes that fall in an
 *  ambiguous cell are redone one by one. Returns Σ residual² of the lanes in float64. */
__attribute__((target("avx512f,avx512bw"))) static __m512d quantize16(
    const float *x, __mmask16 m, float scale, double toCell, const float *table, int tableLen, __m512 tableVec,
    const uint16_t *cells, uint8_t *codes, float *values, const float *w, float *residual, __m512d sum) {
  const __m512 xv = _mm512_maskz_loadu_ps(m, x);
  const __m512d half = _mm512_set1_pd(HALF_CELLS), to = _mm512_set1_pd(toCell);
  const __m512d lo = _mm512_add_pd(_mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(xv)), to), half);
  const __m512d hi =
      _mm512_add_pd(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xv), 1))), to),
                    half);
  // v > 0 ? (v < CELLS ? trunc(v) : CELLS) : 0, for finite v.
  const __m512d zero = _mm512_setzero_pd(), top = _mm512_set1_pd((double)CELLS);
  const __m256i clo = _mm512_cvttpd_epi32(_mm512_min_pd(_mm512_max_pd(lo, zero), top));
  const __m256i chi = _mm512_cvttpd_epi32(_mm512_min_pd(_mm512_max_pd(hi, zero), top));
  const __m512i cell = _mm512_inserti64x4(_mm512_castsi256_si512(clo), chi, 1);
  // Two bytes at each u16 entry (the region's alignment padding covers entry CELLS's second half).
  __m512i c = _mm512_and_si512(_mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, cell, cells, 2),
                               _mm512_set1_epi32(0xffff));
  __mmask16 ambiguous = _mm512_mask_cmpeq_epi32_mask(m, c, _mm512_set1_epi32(AMBIGUOUS));
  if (ambiguous) {
    int lanes[16];
    float xs[16];
    _mm512_storeu_si512(lanes, c);
    _mm512_storeu_ps(xs, xv);
    for (int l = 0; l < 16; l++)
      if (ambiguous >> l & 1) lanes[l] = nearestCode(table, tableLen, xs[l] / scale);
    c = _mm512_loadu_si512(lanes);
  }
  _mm512_mask_cvtepi32_storeu_epi8(codes, m, c);
  const __m512 entry = tableLen <= 16 ? _mm512_permutexvar_ps(c, tableVec)
                                      : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, c, table, 4);
  const __m512 q = _mm512_mul_ps(entry, _mm512_set1_ps(scale));
  _mm512_mask_storeu_ps(values, m, q);
  const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, w), q);
  _mm512_mask_storeu_ps(residual, m, d);
  const __m512d dlo = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
  const __m512d dhi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1)));
  return _mm512_add_pd(sum, _mm512_add_pd(_mm512_mul_pd(dlo, dlo), _mm512_mul_pd(dhi, dhi)));
}

__attribute__((target("avx512f,avx512bw"))) static double quantizeBlocks512(
    const float *x, size_t n, size_t blockSize, float *scales, const float *table, int tableLen,
    const uint16_t *cells, uint8_t *codes, float *values, const float *w, float *residual, uint8_t zeroCode) {
  float padded[16] = {0};
  for (int i = 0; i < tableLen && i < 16; i++) padded[i] = table[i];
  const __m512 tableVec = _mm512_loadu_ps(padded);
  __m512d sum = _mm512_setzero_pd();
  double tail = 0;
  for (size_t start = 0, b = 0; start < n; start += blockSize, b++) {
    const size_t len = n - start < blockSize ? n - start : blockSize;
    __m512 mv = _mm512_setzero_ps();
    for (size_t i = 0; i < len; i += 16) {
      const __mmask16 m = len - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - i)) - 1);
      mv = _mm512_max_ps(mv, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + start + i)));
    }
    const float scale = _mm512_reduce_max_ps(mv);
    scales[b] = scale;
    if (scale == 0) {
      memset(codes + start, zeroCode, len);
      for (size_t i = 0; i < len; i++) {
        values[start + i] = 0;
        const float d = w[start + i];
        residual[start + i] = d;
        tail += (double)d * (double)d;
      }
      continue;
    }
    const double toCell = HALF_CELLS / (double)scale;
    for (size_t i = 0; i < len; i += 16) {
      const __mmask16 m = len - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - i)) - 1);
      const size_t at = start + i;
      sum = quantize16(x + at, m, scale, toCell, table, tableLen, tableVec, cells, codes + at, values + at, w + at,
                       residual + at, sum);
    }
  }
  return _mm512_reduce_add_pd(sum) + tail;
}
#endif

/** NF (absmax) quantization of x and residual = w − values, block by block (the wasm
 *  kernel's quantizeAbsMaxResidual); returns Σ residual². */
static double quantizeAbsMaxResidual(const float *x, size_t n, size_t blockSize, float *scales, const float *table,
                                     int tableLen, const uint16_t *cells, uint8_t *codes, float *values,
                                     const float *w, float *residual) {
  const uint8_t zeroCode = (uint8_t)nearestCode(table, tableLen, 0);
#ifdef LOFTQ_X86
  if (isaSupported(ISA_AVX512) && __builtin_cpu_supports("avx512bw"))
    return quantizeBlocks512(x, n, blockSize, scales, table, tableLen, cells, codes, values, w, residual, zeroCode);
#endif
  double s = 0;
  for (size_t start = 0, b = 0; start < n; start += blockSize, b++) {
    const size_t len = n - start < blockSize ? n - start : blockSize;
    float scale = 0;
    for (size_t i = 0; i < len; i++) {
      const float a = x[start + i] < 0 ? -x[start + i] : x[start + i];
      if (a > scale) scale = a;
    }
    scales[b] = scale;
    const double toCell = HALF_CELLS / (double)scale;
    for (size_t i = start; i < start + len; i++) {
      float d;
      if (scale == 0) {
        codes[i] = zeroCode;
        values[i] = 0;
        d = residual[i] = w[i];
      } else {
        d = quantizeOne(x[i], scale, toCell, table, tableLen, cells, codes + i, values + i, w[i], residual + i);
      }
      s += (double)d * (double)d;
    }
  }
  return s;
}

/** Σ (w − q − B·A)² over rows × cols, B rows × r and A r × cols row-major, and (when target
 *  is not NULL) target = w − B·A (the wasm kernel's lowRankStep). */
static double lowRankStepGeneric(const float *w, const float *q, const float *bf, const float *af, size_t rows,
                                 size_t cols, size_t r, float *target, float *scratch) {
  double s = 0;
  for (size_t i = 0; i < rows; i++) {
    float *acc = scratch;
    memset(acc, 0, cols * sizeof(float));
    for (size_t k = 0; k < r; k++) {
      const float b = bf[i * r + k];
      const float *a = af + k * cols;
      for (size_t j = 0; j < cols; j++) acc[j] += b * a[j];
    }
    for (size_t j = 0; j < cols; j++) {
      const float wj = w[i * cols + j];
      const double d = (double)wj - (double)q[i * cols + j] - (double)acc[j];
      s += d * d;
      if (target) target[i * cols + j] = wj - acc[j];
    }
  }
  return s;
}

#ifdef LOFTQ_X86
/** ROWS rows × 64 columns per tile: 4·ROWS accumulators, each A load feeding ROWS products.
 *  `chunk` is A's 64 columns from j on, packed (r × 64, zero-padded): A's rows are a row
 *  length apart, often a power of two that maps all of them to one cache set. */
#define LOW_RANK_TILE(ROWS)                                                                                  \
  __attribute__((target("avx512f"))) static __m512d lowRankTile##ROWS(                                     \
      const float *w, const float *q, const float *bf, const float *chunk, size_t i, size_t j, size_t cols,    \
      size_t r, float *target, __m512d sum) {                                                                \
    __mmask16 m[4];                                                                                          \
    for (int v = 0; v < 4; v++) {                                                                            \
      const long left = (long)cols - (long)(j + 16 * v);                                                     \
      m[v] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);                 \
    }                                                                                                        \
    __m512 acc[ROWS][4];                                                                                     \
    for (int y = 0; y < ROWS; y++)                                                                           \
      for (int v = 0; v < 4; v++) acc[y][v] = _mm512_setzero_ps();                                           \
    for (size_t k = 0; k < r; k++) {                                                                         \
      const float *a = chunk + k * 64;                                                                       \
      __m512 av[4];                                                                                          \
      for (int v = 0; v < 4; v++) av[v] = _mm512_loadu_ps(a + 16 * v);                                       \
      for (int y = 0; y < ROWS; y++) {                                                                       \
        const __m512 b = _mm512_set1_ps(bf[(i + y) * r + k]);                                                \
        for (int v = 0; v < 4; v++) acc[y][v] = _mm512_fmadd_ps(b, av[v], acc[y][v]);                        \
      }                                                                                                      \
    }                                                                                                        \
    for (int y = 0; y < ROWS; y++)                                                                           \
      for (int v = 0; v < 4; v++) {                                                                          \
        if (!m[v]) break;                                                                                    \
        const size_t at = (i + y) * cols + j + 16 * v;                                                       \
        const __m512 wv = _mm512_maskz_loadu_ps(m[v], w + at), qv = _mm512_maskz_loadu_ps(m[v], q + at);    \
        if (target) _mm512_mask_storeu_ps(target + at, m[v], _mm512_sub_ps(wv, acc[y][v]));                  \
        for (int h = 0; h < 2; h++) {                                                                        \
          const __m512d wd = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(wv), h))); \
          const __m512d qd = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(qv), h))); \
          const __m512d ad =                                                                                 \
              _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[y][v]), h)));     \
          const __m512d d = _mm512_sub_pd(_mm512_sub_pd(wd, qd), ad);                                        \
          sum = _mm512_add_pd(sum, _mm512_mul_pd(d, d));                                                     \
        }                                                                                                    \
      }                                                                                                      \
    return sum;                                                                                              \
  }
LOW_RANK_TILE(4)
LOW_RANK_TILE(1)

__attribute__((target("avx512f"))) static double lowRankStep512(const float *w, const float *q, const float *bf,
                                                                const float *af, size_t rows, size_t cols, size_t r,
                                                                float *target, float *packed) {
  // A in chunks of 64 columns, each r × 64 contiguous (the scratch holds r × cols floats and
  // the chunks need r × 64 · ⌈cols / 64⌉: the last chunk is packed apart when it is short).
  const size_t chunks = (cols + 63) / 64, fullChunks = cols / 64;
  float *last = NULL;
  size_t lastCapacity = 0;
  if (chunks > fullChunks) {
    last = takeBuffer(r * 64 * sizeof(float), &lastCapacity);
    if (!last) return lowRankStepGeneric(w, q, bf, af, rows, cols, r, target, packed);
  }
  for (size_t c = 0; c < chunks; c++) {
    float *dst = c < fullChunks ? packed + c * r * 64 : last;
    const size_t width = cols - c * 64 < 64 ? cols - c * 64 : 64;
    for (size_t k = 0; k < r; k++) {
      memcpy(dst + k * 64, af + k * cols + c * 64, width * sizeof(float));
      if (width < 64) memset(dst + k * 64 + width, 0, (64 - width) * sizeof(float));
    }
  }
  __m512d sum = _mm512_setzero_pd();
  size_t i = 0;
  for (; i + 4 <= rows; i += 4)
    for (size_t c = 0; c < chunks; c++)
      sum = lowRankTile4(w, q, bf, c < fullChunks ? packed + c * r * 64 : last, i, c * 64, cols, r, target, sum);
  for (; i < rows; i++)
    for (size_t c = 0; c < chunks; c++)
      sum = lowRankTile1(w, q, bf, c < fullChunks ? packed + c * r * 64 : last, i, c * 64, cols, r, target, sum);
  giveBuffer(last, lastCapacity);
  return _mm512_reduce_add_pd(sum);
}
#endif

// ---- Node-API ----------------------------------------------------------------------------

typedef struct {
  float *data;
  size_t rows, cols, capacity;
  /** Set when data is the caller's shared memory (holdView), not a copy. */
  napi_ref view;
} Held;

/** Lets go of a held matrix's data: the copy back to the cache, or the view's reference. */
static void dropHeld(napi_env env, Held *h) {
  if (h->view) {
    napi_delete_reference(env, h->view);
    h->view = NULL;
  } else if (h->data) {
    napi_adjust_external_memory(env, -(int64_t)(h->rows * h->cols * sizeof(float)), NULL);
    giveBuffer(h->data, h->capacity);
  }
  h->data = NULL;
}

#define CHECK(call)                                                                                 \
  do {                                                                                              \
    if ((call) != napi_ok) {                                                                        \
      const napi_extended_error_info *info;                                                         \
      napi_get_last_error_info(env, &info);                                                         \
      napi_throw_error(env, NULL, info && info->error_message ? info->error_message : "napi call failed"); \
      return NULL;                                                                                  \
    }                                                                                               \
  } while (0)

static napi_value fail(napi_env env, const char *message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

static int float32Arg(napi_env env, napi_value v, float **data, size_t *length) {
  bool is;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return 0;
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  void *raw;
  if (napi_get_typedarray_info(env, v, &type, length, &raw, &buffer, &offset) != napi_ok) return 0;
  if (type != napi_float32_array) return 0;
  *data = raw;
  return 1;
}

static int sizeArg(napi_env env, napi_value v, size_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0) || d > 9007199254740991.0 || d != (double)(size_t)d)
    return 0;
  *out = (size_t)d;
  return 1;
}

static int isaArg(napi_env env, napi_value v, Isa *isa) {
  char name[16];
  size_t len;
  if (napi_get_value_string_utf8(env, v, name, sizeof name, &len) != napi_ok) return 0;
  for (int i = 0; i < 3; i++)
    if (strcmp(name, ISA_NAMES[i]) == 0) {
      *isa = (Isa)i;
      return isaSupported(*isa);
    }
  return 0;
}

static void finalizeHeld(napi_env env, void *data, void *hint) {
  (void)hint;
  dropHeld(env, data);
  free(data);
}

/** isa(): the instruction set the products use on this CPU. */
static napi_value Isa_(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value s;
  CHECK(napi_create_string_utf8(env, ISA_NAMES[bestIsa()], NAPI_AUTO_LENGTH, &s));
  return s;
}

/** supports(name): whether this CPU runs the `name` kernels. */
static napi_value Supports(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Isa isa;
  CHECK(napi_get_boolean(env, argc == 1 && isaArg(env, argv[0], &isa), &out));
  return out;
}

/** hold(a, rows, cols): a copy of A owned by the returned handle. */
static napi_value Hold(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  float *a;
  size_t len, rows, cols;
  if (argc != 3 || !float32Arg(env, argv[0], &a, &len) || !sizeArg(env, argv[1], &rows) ||
      !sizeArg(env, argv[2], &cols))
    return fail(env, "hold(a: Float32Array, rows, cols)");
  if (rows != 0 && cols > SIZE_MAX / sizeof(float) / rows) return fail(env, "hold: matrix too large");
  if (len != rows * cols) return fail(env, "hold: a.length is not rows × cols");
  Held *h = calloc(1, sizeof *h);
  const size_t bytes = rows * cols * sizeof(float);
  if (h) h->data = takeBuffer(bytes, &h->capacity);
  if (!h || !h->data) {
    free(h);
    napi_throw_range_error(env, NULL, "native backend: out of memory holding a matrix");
    return NULL;
  }
  memcpy(h->data, a, bytes);
  h->rows = rows;
  h->cols = cols;
  napi_adjust_external_memory(env, (int64_t)bytes, NULL);
  if (napi_create_external(env, h, finalizeHeld, NULL, &out) != napi_ok) {
    finalizeHeld(env, h, NULL);
    return fail(env, "hold: could not create a handle");
  }
  return out;
}

/** holdView(a, rows, cols): A read in place — for a view of shared memory, which can be
 *  neither detached nor moved, and which the engine does not write while it is held (the
 *  contract of DeviceMatrix: loftq.ts). Saves a copy of the matrix per hold, and the fresh
 *  pages it would take. The view is kept alive until release. */
static napi_value HoldView(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  float *a;
  size_t len, rows, cols;
  if (argc != 3 || !float32Arg(env, argv[0], &a, &len) || !sizeArg(env, argv[1], &rows) ||
      !sizeArg(env, argv[2], &cols))
    return fail(env, "holdView(a: Float32Array, rows, cols)");
  if (rows != 0 && cols > SIZE_MAX / sizeof(float) / rows) return fail(env, "holdView: matrix too large");
  if (len != rows * cols) return fail(env, "holdView: a.length is not rows × cols");
  Held *h = calloc(1, sizeof *h);
  if (!h) {
    napi_throw_range_error(env, NULL, "native backend: out of memory");
    return NULL;
  }
  h->data = a;
  h->rows = rows;
  h->cols = cols;
  if (napi_create_reference(env, argv[0], 1, &h->view) != napi_ok) {
    free(h);
    return fail(env, "holdView: could not keep the view");
  }
  if (napi_create_external(env, h, finalizeHeld, NULL, &out) != napi_ok) {
    finalizeHeld(env, h, NULL);
    return fail(env, "holdView: could not create a handle");
  }
  return out;
}

static Held *heldArg(napi_env env, napi_value v) {
  napi_valuetype t;
  void *data;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) return NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok) return NULL;
  return data;
}

/** times(held, b, n, out, threads, isa): out (rows × n) = A · b, b being cols × n. */
static napi_value Times(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Held *h = argc == 6 ? heldArg(env, argv[0]) : NULL;
  float *b, *out;
  size_t bLen, outLen, n, threads;
  Isa isa;
  if (!h || !float32Arg(env, argv[1], &b, &bLen) || !sizeArg(env, argv[2], &n) ||
      !float32Arg(env, argv[3], &out, &outLen) || !sizeArg(env, argv[4], &threads) || !isaArg(env, argv[5], &isa))
    return fail(env, "times(held, b: Float32Array, n, out: Float32Array, threads, isa)");
  if (!h->data) return fail(env, "times: the matrix was released");
  if (h->cols != 0 && n > SIZE_MAX / sizeof(float) / h->cols) return fail(env, "times: block too large");
  if (bLen != h->cols * n || outLen != h->rows * n) return fail(env, "times: shape mismatch");
  if (multiply(h->data, h->rows, h->cols, b, n, out, (int)(threads > MAX_THREADS ? MAX_THREADS : threads), isa)) {
    napi_throw_range_error(env, NULL, "native backend: out of memory in a product");
    return NULL;
  }
  return NULL;
}

/** release(held): frees the copy now rather than at garbage collection. */
static napi_value Release(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Held *h = argc == 1 ? heldArg(env, argv[0]) : NULL;
  if (!h) return fail(env, "release(held)");
  dropHeld(env, h);
  return NULL;
}


// Kernel calls: (memory: Uint8Array over the whole WebAssembly memory, …the wasm kernel's
// arguments). Every region is checked to lie inside the memory before anything is touched.

typedef struct {
  uint8_t *base;
  size_t length;
} Memory;

static int memoryArg(napi_env env, napi_value v, Memory *m) {
  bool is;
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  void *raw;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return 0;
  if (napi_get_typedarray_info(env, v, &type, &m->length, &raw, &buffer, &offset) != napi_ok) return 0;
  if (type != napi_uint8_array) return 0;
  m->base = raw;
  return 1;
}

/** base + offset when [offset, offset + bytes) lies inside the memory, else NULL. */
static void *region(const Memory *m, double offset, double bytes) {
  if (!(offset >= 0) || !(bytes >= 0) || offset != (double)(size_t)offset || offset + bytes > (double)m->length)
    return NULL;
  return m->base + (size_t)offset;
}

static int numbers(napi_env env, napi_value *argv, size_t count, double *out) {
  for (size_t i = 0; i < count; i++)
    if (napi_get_value_double(env, argv[i], &out[i]) != napi_ok) return 0;
  return 1;
}

static int wholeCount(double v, double limit) { return v >= 0 && v <= limit && v == (double)(int64_t)v; }

/** quantizeAbsMaxResidual(memory, x, n, blockSize, scales, table, tableLen, cells, codes,
 *  values, w, residual) → Σ residual². */
static napi_value QuantizeAbsMaxResidual(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Memory m;
  double a[11];
  if (argc != 12 || !memoryArg(env, argv[0], &m) || !numbers(env, argv + 1, 11, a))
    return fail(env, "quantizeAbsMaxResidual(memory: Uint8Array, …11 numbers)");
  const double n = a[1], blockSize = a[2], tableLen = a[5];
  if (!wholeCount(n, 4294967295.0) || !wholeCount(blockSize, 1 << 30) || blockSize < 1 || !wholeCount(tableLen, 256) ||
      tableLen < 1)
    return fail(env, "quantizeAbsMaxResidual: bad sizes");
  const double blocks = n == 0 ? 0 : (double)(((size_t)n + (size_t)blockSize - 1) / (size_t)blockSize);
  float *x = region(&m, a[0], 4 * n), *scales = region(&m, a[3], 4 * blocks), *table = region(&m, a[4], 4 * tableLen);
  // The vector path reads two bytes past the last cell (inside the region's alignment padding).
  uint16_t *cells = region(&m, a[6], 2 * (CELLS + 2));
  uint8_t *codes = region(&m, a[7], n);
  float *values = region(&m, a[8], 4 * n), *w = region(&m, a[9], 4 * n), *residual = region(&m, a[10], 4 * n);
  if (!x || !scales || !table || !cells || !codes || !values || !w || !residual)
    return fail(env, "quantizeAbsMaxResidual: a region lies outside the memory");
  const double sum = quantizeAbsMaxResidual(x, (size_t)n, (size_t)blockSize, scales, table, (int)tableLen, cells,
                                            codes, values, w, residual);
  CHECK(napi_create_double(env, sum, &out));
  return out;
}

/** lowRankStep(memory, w, q, b, a, rows, cols, r, target (0: none), scratch) → Σ (w − q − B·A)². */
static napi_value LowRankStep(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Memory m;
  double a[9];
  if (argc != 10 || !memoryArg(env, argv[0], &m) || !numbers(env, argv + 1, 9, a))
    return fail(env, "lowRankStep(memory: Uint8Array, …9 numbers)");
  const double rows = a[4], cols = a[5], r = a[6];
  if (!wholeCount(rows, 1 << 30) || !wholeCount(cols, 1 << 30) || !wholeCount(r, 1 << 20))
    return fail(env, "lowRankStep: bad sizes");
  const double size = rows * cols;
  float *w = region(&m, a[0], 4 * size), *q = region(&m, a[1], 4 * size), *bf = region(&m, a[2], 4 * rows * r);
  float *af = region(&m, a[3], 4 * r * cols), *scratch = region(&m, a[8], 4 * (r > 1 ? r : 1) * cols);
  float *target = a[7] == 0 ? NULL : region(&m, a[7], 4 * size);
  if (!w || !q || !bf || !af || !scratch || (a[7] != 0 && !target))
    return fail(env, "lowRankStep: a region lies outside the memory");
  double sum;
#ifdef LOFTQ_X86
  if (isaSupported(ISA_AVX512))
    sum = lowRankStep512(w, q, bf, af, (size_t)rows, (size_t)cols, (size_t)r, target, scratch);
  else
#endif
    sum = lowRankStepGeneric(w, q, bf, af, (size_t)rows, (size_t)cols, (size_t)r, target, scratch);
  CHECK(napi_create_double(env, sum, &out));
  return out;
}

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
      {"isa", NULL, Isa_, NULL, NULL, NULL, napi_enumerable, NULL},
      {"supports", NULL, Supports, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hold", NULL, Hold, NULL, NULL, NULL, napi_enumerable, NULL},
      {"holdView", NULL, HoldView, NULL, NULL, NULL, napi_enumerable, NULL},
      {"times", NULL, Times, NULL, NULL, NULL, napi_enumerable, NULL},
      {"release", NULL, Release, NULL, NULL, NULL, napi_enumerable, NULL},
      {"quantizeAbsMaxResidual", NULL, QuantizeAbsMaxResidual, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lowRankStep", NULL, LowRankStep, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
