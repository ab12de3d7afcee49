// The native backend (linalg/nativeBackend.ts): single-precision products of the one shape
// the engine issues — a held matrix A (rows × cols, row-major) times a block B (cols × n,
// row-major) — with AVX-512 or AVX2+FMA when the CPU has them and portable C otherwise.
// WebAssembly SIMD is 128 bits wide and has no fused multiply-add: on a CPU with AVX-512
// the same product runs about four times faster here.
//
// Layout: B is packed into strips of 16 columns (cols × 16 each, zero-padded), read in
// blocks of NC_STRIPS strips and slices of KC rows that stay in cache while every MR-row
// panel of A passes over them; A is read in place, MR rows at a time. Work is split by row
// panels over `threads` threads (the calling one included). Built by esbuild.mjs with the
// system C compiler; absent, the engine runs on wasm.

#define NAPI_VERSION 8
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <math.h>
#include "native.h"

enum { MR = 6, STRIP = 16, KC = 256, NC_STRIPS = 32, THIN_STRIPS = 8, PARALLEL_PACK = 1 << 20 };
static const size_t THIN_CHUNK_BYTES = 512 * 1024;
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
// to the system. Slots are many because sizes are: a held metric's eight bands pack
// eight sizes per product, its sixteen held bands come back together when a job ends, and
// two job threads interleave theirs; with 8 slots a calibrated tinyllama layer missed 3.3 GB
// of buffers (≈10 s of page faults), with 32 it missed 0.6 GB — evicting at 200–380 MB
// cached, for want of slots, not bytes — and with 64 a 2-layer run's quantize phase misses
// 248 MB instead of 341 MB, all first uses of a size, its peak RSS unchanged. Across layers
// 64 were still too few: a layer's jobs return more sizes than that between two layers of the
// calibration pass, which evicted the pass's packed weights (176 MB a layer, re-faulted every
// layer: 2.3 GB of a 22-layer 1.1B run); with 256 slots they stay (a 6-layer run: 1.01 M → 0.76 M
// page faults, the rest first uses), and a 2 GB bound instead of 1 GB changed nothing.

enum { CACHE_SLOTS = 256 };
static const size_t CACHE_MAX_BYTES = (size_t)1 << 30;
static pthread_mutex_t cacheLock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  void *p;
  size_t bytes;
  uint64_t stamp;
} cache[CACHE_SLOTS];

/** A 64-byte aligned buffer of at least `bytes` (its capacity in *capacity), or NULL. */
void *takeBuffer(size_t bytes, size_t *capacity) {
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

void giveBuffer(void *p, size_t capacity) {
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

// ---- Threads -----------------------------------------------------------------------------

typedef struct {
  RangeFn *fn;
  void *ctx;
  size_t first, last, part;
} RangePart;

static void *rangePartThread(void *arg) {
  const RangePart *r = arg;
  r->fn(r->ctx, r->first, r->last, r->part);
  return NULL;
}

/** Runs fn over [0, total) in up to `threads` parts with inner bounds on multiples of `align`,
 *  part 0 on this thread; returns the number of parts (results per part are the caller's,
 *  indexed by part, so sums add up in one order). A thread that cannot start leaves its
 *  part to this one. */
size_t parallelFor(size_t total, size_t align, int threads, RangeFn *fn, void *ctx) {
  const size_t units = (total + align - 1) / align;
  size_t parts = threads < 1 ? 1 : (size_t)threads;
  if (parts > MAX_THREADS) parts = MAX_THREADS;
  if (parts > units) parts = units ? units : 1;
  RangePart work[MAX_THREADS];
  pthread_t ids[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  for (size_t i = 0; i < parts; i++) {
    const size_t first = units * i / parts * align, last = units * (i + 1) / parts * align;
    work[i] = (RangePart){fn, ctx, first, last < total ? last : total, i};
    if (i > 0) started[i] = pthread_create(&ids[i], NULL, rangePartThread, &work[i]) == 0;
  }
  rangePartThread(&work[0]);
  for (size_t i = 1; i < parts; i++) {
    if (started[i]) pthread_join(ids[i], NULL);
    else rangePartThread(&work[i]);
  }
  return parts;
}

// ---- Products -----------------------------------------------------------------------------

typedef struct {
  const float *a;
  size_t rows, cols, n, strips;
  const float *packed; // strips × cols × STRIP
  float *out;
  Isa isa;
} Product;

/** One MR-row panel (its first row row0) against strips [s0, s1) and rows [p0, p0 + kc) of
 *  packed B, added to the outputs unless p0 = 0. */
static void panelSlice(const Product *w, size_t row0, size_t s0, size_t s1, size_t p0, int kc) {
  const size_t stripStride = w->cols * STRIP;
  const int mr = (int)(w->rows - row0 < MR ? w->rows - row0 : MR);
  const int add = p0 > 0;
  // Rows past the end repeat the last one: computed, never stored.
  const float *rowsA[MR];
  for (int r = 0; r < MR; r++) rowsA[r] = w->a + (row0 + (size_t)(r < mr ? r : mr - 1)) * w->cols + p0;
  float *c = w->out + row0 * w->n;
  for (size_t s = s0; s < s1;) {
    const float *b = w->packed + s * stripStride + p0 * STRIP;
    const size_t col0 = s * STRIP;
    int nv = 1;
    Kernel *k = kernelGeneric;
#ifdef LOFTQ_X86
    if (w->isa == ISA_AVX512) {
      nv = (int)(s1 - s < 4 ? s1 - s : 4);
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

/** Row panels [panel0, panel1) of a product. Wide B: strips go in blocks of NC_STRIPS,
 *  outermost — a block's KC-row slice of packed B (512 KB) stays in L2 while every panel
 *  passes over it, where a slice of all the strips (11.5 MB at n = 11264) came from memory
 *  once per panel. Thin B (LoftQ's Krylov blocks, n ≤ THIN_STRIPS strips: all of packed B is
 *  a few hundred KB to 2 MB): panels outermost, each panel's MR rows read start to end — the
 *  wide order read A in 1 KB pieces of rows 16 KB apart, which the prefetchers follow badly
 *  (11008×4096 · 4096×24: 1.7× slower on one thread). Either way each output sums its KC
 *  slices in increasing order, so results do not change. */
static void productPanels(void *ctx, size_t panel0, size_t panel1, size_t part) {
  (void)part;
  const Product *w = ctx;
  if (w->strips <= THIN_STRIPS) {
    // Rows of packed B in chunks of at most THIN_CHUNK_BYTES (whole KC slices), each chunk
    // staying in L2 while every panel reads its part of A: 16 KB of a 4096-wide row at a time.
    size_t chunk = THIN_CHUNK_BYTES / (w->strips * STRIP * sizeof(float)) / KC * KC;
    if (chunk < KC) chunk = KC;
    for (size_t c0 = 0; c0 < w->cols; c0 += chunk) {
      const size_t c1 = w->cols - c0 < chunk ? w->cols : c0 + chunk;
      for (size_t ip = panel0; ip < panel1; ip++)
        for (size_t p0 = c0; p0 < c1; p0 += KC)
          panelSlice(w, ip * MR, 0, w->strips, p0, (int)(w->cols - p0 < KC ? w->cols - p0 : KC));
    }
    return;
  }
  for (size_t s0 = 0; s0 < w->strips; s0 += NC_STRIPS) {
    const size_t s1 = w->strips - s0 < NC_STRIPS ? w->strips : s0 + NC_STRIPS;
    for (size_t p0 = 0; p0 < w->cols; p0 += KC) {
      const int kc = (int)(w->cols - p0 < KC ? w->cols - p0 : KC);
      for (size_t ip = panel0; ip < panel1; ip++) panelSlice(w, ip * MR, s0, s1, p0, kc);
    }
  }
}

/** out (rows × n) = A (rows × cols) · B, B packed into strips (cols × STRIP each). */
static void productOnPacked(const float *a, size_t rows, size_t cols, const float *packed, size_t n, float *out,
                            int threads, Isa isa) {
  Product work = {a, rows, cols, n, (n + STRIP - 1) / STRIP, packed, out, isa};
  parallelFor((rows + MR - 1) / MR, 1, threads, productPanels, &work);
}

typedef struct {
  const float *b; // B, rows `ldb` floats apart
  size_t ldb;
  const float *const *wRows; // or W = Bᵀ (n × depth), row j at wRows[j]
  size_t depth, n;           // B is depth × n: depth is the product's cols
  float *packed;
  int vector; // W's 8 × 8 blocks transposed with AVX2
} Pack;

/** Strips [s0, s1) of B into packed (depth × STRIP each, zero-padded). */
static void packStrips(void *ctx, size_t s0, size_t s1, size_t part) {
  (void)part;
  const Pack *k = ctx;
  for (size_t s = s0; s < s1; s++) {
    const size_t col0 = s * STRIP, width = k->n - col0 < STRIP ? k->n - col0 : STRIP;
    float *dst = k->packed + s * k->depth * STRIP;
    for (size_t p = 0; p < k->depth; p++, dst += STRIP) {
      memcpy(dst, k->b + p * k->ldb + col0, width * sizeof(float));
      if (width < STRIP) memset(dst + width, 0, (STRIP - width) * sizeof(float));
    }
  }
}

#ifdef LOFTQ_X86
/** dst[i·ldd + j] = rows[j][p + i] for i, j < 8: the transpose of an 8 × 8 block whose rows
 *  lie anywhere (W's rows for a strip, or one matrix's rows a stride apart). */
__attribute__((target("avx2"))) static inline void transpose8x8Rows(const float *const *rows, size_t p, float *dst,
                                                                     size_t ldd) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(rows[i] + p);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; i++) {
    _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}
#endif

/** Strips [s0, s1) of Wᵀ into packed, read from W's rows: 16 rows of W stream in side by side
 *  and leave as one strip, so no transposed copy of W is ever made. */
static void packStripsTransposed(void *ctx, size_t s0, size_t s1, size_t part) {
  (void)part;
  const Pack *k = ctx;
  for (size_t s = s0; s < s1; s++) {
    const size_t col0 = s * STRIP, width = k->n - col0 < STRIP ? k->n - col0 : STRIP;
    const float *const *rows = k->wRows + col0;
    float *dst = k->packed + s * k->depth * STRIP;
    size_t p = 0;
#ifdef LOFTQ_X86
    if (k->vector && width == STRIP)
      for (; p + 8 <= k->depth; p += 8) {
        // 8 × 8 blocks of W into the strip's two halves.
        transpose8x8Rows(rows, p, dst + p * STRIP, STRIP);
        transpose8x8Rows(rows + 8, p, dst + p * STRIP + 8, STRIP);
      }
#endif
    for (; p < k->depth; p++)
      for (size_t j = 0; j < STRIP; j++) dst[p * STRIP + j] = j < width ? rows[j][p] : 0.0f;
  }
}

/** out (rows × n) = A (rows × cols) · B, B (cols × n) packed by packFn from `pack`. Returns
 *  0, or -1 when memory ran out. */
static int packAndMultiply(const float *a, size_t rows, size_t cols, Pack *pack, RangeFn *packFn, float *out,
                           int threads, Isa isa) {
  const size_t n = pack->n;
  if (rows == 0 || n == 0) return 0;
  if (cols == 0) {
    memset(out, 0, rows * n * sizeof(float));
    return 0;
  }
  const size_t strips = (n + STRIP - 1) / STRIP;
  size_t packedCapacity;
  pack->packed = takeBuffer(strips * cols * STRIP * sizeof(float), &packedCapacity);
  if (!pack->packed) return -1;
  // A thread costs tens of µs to start: worth it from a few MB of B on.
  parallelFor(strips, 1, cols * n >= PARALLEL_PACK ? threads : 1, packFn, pack);
  productOnPacked(a, rows, cols, pack->packed, n, out, threads, isa);
  giveBuffer(pack->packed, packedCapacity);
  return 0;
}

/** out (rows × n) = A (rows × cols) · B (cols × n, rows `ldb` floats apart). Returns 0, or
 *  -1 when memory ran out. */
static int multiply(const float *a, size_t rows, size_t cols, const float *b, size_t ldb, size_t n, float *out,
                    int threads, Isa isa) {
  Pack pack = {b, ldb, NULL, cols, n, NULL, 0};
  return packAndMultiply(a, rows, cols, &pack, packStrips, out, threads, isa);
}

/** out (rows × n) = A (rows × cols) · Wᵀ, row j of W (cols floats) at wRows[j]. Returns 0,
 *  or -1 when memory ran out. */
static int multiplyTransposed(const float *a, size_t rows, size_t cols, const float *const *wRows, size_t n,
                              float *out, int threads, Isa isa) {
  Pack pack = {NULL, 0, wRows, cols, n, NULL, isaSupported(ISA_AVX2)};
  return packAndMultiply(a, rows, cols, &pack, packStripsTransposed, out, threads, isa);
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
static double quantizeRange(const float *x, size_t n, size_t blockSize, float *scales, const float *table,
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

typedef struct {
  const float *x, *table, *w;
  size_t blockSize;
  float *scales, *values, *residual;
  int tableLen;
  const uint16_t *cells;
  uint8_t *codes;
  double sums[MAX_THREADS];
} Quantization;

static void quantizePart(void *ctx, size_t first, size_t last, size_t part) {
  Quantization *z = ctx;
  z->sums[part] = quantizeRange(z->x + first, last - first, z->blockSize, z->scales + first / z->blockSize, z->table,
                                z->tableLen, z->cells, z->codes + first, z->values + first, z->w + first,
                                z->residual + first);
}

/** quantizeRange over `threads` threads, split on whole blocks. */
static double quantizeAbsMaxResidual(const float *x, size_t n, size_t blockSize, float *scales, const float *table,
                                     int tableLen, const uint16_t *cells, uint8_t *codes, float *values,
                                     const float *w, float *residual, int threads) {
  Quantization z = {x, table, w, blockSize, scales, values, residual, tableLen, cells, codes, {0}};
  const size_t parts = parallelFor(n, blockSize, threads, quantizePart, &z);
  double sum = 0;
  for (size_t i = 0; i < parts; i++) sum += z.sums[i];
  return sum;
}

typedef struct {
  const float *w, *q, *bf, *af;
  size_t rows, cols, r;
  float *target;
  /** A in chunks of 64 columns, r × 64 each (the vector path); the last, when short, apart. */
  float *packed, *lastChunk;
  double sums[MAX_THREADS];
} LowRank;

/** Rows [first, last) of the low-rank step, one row at a time through a row of scratch. */
static void lowRankRowsGeneric(void *ctx, size_t first, size_t last, size_t part) {
  LowRank *z = ctx;
  size_t capacity;
  float *acc = takeBuffer(z->cols * sizeof(float), &capacity);
  double s = 0;
  for (size_t i = first; i < last && acc; i++) {
    memset(acc, 0, z->cols * sizeof(float));
    for (size_t k = 0; k < z->r; k++) {
      const float b = z->bf[i * z->r + k];
      const float *a = z->af + k * z->cols;
      for (size_t j = 0; j < z->cols; j++) acc[j] += b * a[j];
    }
    for (size_t j = 0; j < z->cols; j++) {
      const float wj = z->w[i * z->cols + j];
      const double d = (double)wj - (double)z->q[i * z->cols + j] - (double)acc[j];
      s += d * d;
      if (z->target) z->target[i * z->cols + j] = wj - acc[j];
    }
  }
  z->sums[part] = acc ? s : NAN;
  giveBuffer(acc, capacity);
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

/** Rows [first, last) of the low-rank step over the packed chunks of A. */
__attribute__((target("avx512f"))) static void lowRankRows512(void *ctx, size_t first, size_t last, size_t part) {
  LowRank *z = ctx;
  const size_t chunks = (z->cols + 63) / 64, fullChunks = z->cols / 64;
  __m512d sum = _mm512_setzero_pd();
  size_t i = first;
  for (; i + 4 <= last; i += 4)
    for (size_t c = 0; c < chunks; c++)
      sum = lowRankTile4(z->w, z->q, z->bf, c < fullChunks ? z->packed + c * z->r * 64 : z->lastChunk, i, c * 64,
                         z->cols, z->r, z->target, sum);
  for (; i < last; i++)
    for (size_t c = 0; c < chunks; c++)
      sum = lowRankTile1(z->w, z->q, z->bf, c < fullChunks ? z->packed + c * z->r * 64 : z->lastChunk, i, c * 64,
                         z->cols, z->r, z->target, sum);
  z->sums[part] = _mm512_reduce_add_pd(sum);
}
#endif

/** Σ (w − q − B·A)² and target = w − B·A (the wasm kernel's lowRankStep) over `threads`
 *  threads by rows; `scratch` holds r × cols floats (A's packed chunks). NAN: out of memory. */
static double lowRankStep(const float *w, const float *q, const float *bf, const float *af, size_t rows, size_t cols,
                          size_t r, float *target, float *scratch, int threads) {
  LowRank z = {w, q, bf, af, rows, cols, r, target, scratch, NULL, {0}};
  RangeFn *rowsFn = lowRankRowsGeneric;
  size_t lastCapacity = 0;
#ifdef LOFTQ_X86
  if (isaSupported(ISA_AVX512)) {
    // A's rows are a row length apart, often a power of two that maps all of them to one
    // cache set: the tiles read A from chunks of 64 columns, each r × 64 contiguous.
    const size_t chunks = (cols + 63) / 64, fullChunks = cols / 64;
    if (chunks > fullChunks) z.lastChunk = takeBuffer(r * 64 * sizeof(float), &lastCapacity);
    if (chunks == fullChunks || z.lastChunk) {
      for (size_t c = 0; c < chunks; c++) {
        float *dst = c < fullChunks ? scratch + c * r * 64 : z.lastChunk;
        const size_t width = cols - c * 64 < 64 ? cols - c * 64 : 64;
        for (size_t k = 0; k < r; k++) {
          memcpy(dst + k * 64, af + k * cols + c * 64, width * sizeof(float));
          if (width < 64) memset(dst + k * 64 + width, 0, (64 - width) * sizeof(float));
        }
      }
      rowsFn = lowRankRows512;
    }
  }
#endif
  const size_t parts = parallelFor(rows, 4, threads, rowsFn, &z);
  giveBuffer(z.lastChunk, lastCapacity);
  double sum = 0;
  for (size_t i = 0; i < parts; i++) sum += z.sums[i];
  return sum;
}

typedef struct {
  const float *src;
  float *dst;
  size_t rows, cols;
} Transpose;

#ifdef LOFTQ_X86
/** dst (8 rows of stride ldd) = the transpose of src's 8 × 8 block (rows of stride lds). */
__attribute__((target("avx2"))) static inline void transpose8x8(const float *src, size_t lds, float *dst, size_t ldd) {
  const float *rows[8];
  for (int i = 0; i < 8; i++) rows[i] = src + i * lds;
  transpose8x8Rows(rows, 0, dst, ldd);
}

/** One 32 × 32 tile (or less at the edges) in 8 × 8 blocks, the rest one by one. */
__attribute__((target("avx2"))) static void transposeTileAvx2(const Transpose *t, size_t i0, size_t i1, size_t j0,
                                                              size_t j1) {
  const size_t iFull = i0 + ((i1 - i0) & ~(size_t)7), jFull = j0 + ((j1 - j0) & ~(size_t)7);
  for (size_t i = i0; i < iFull; i += 8)
    for (size_t j = j0; j < jFull; j += 8)
      transpose8x8(t->src + i * t->cols + j, t->cols, t->dst + j * t->rows + i, t->rows);
  for (size_t j = j0; j < j1; j++)
    for (size_t i = j < jFull ? iFull : i0; i < i1; i++) t->dst[j * t->rows + i] = t->src[i * t->cols + j];
}
#endif

/** Rows [first, last) of src into the same columns of dst = srcᵀ, in 32 × 32 tiles that stay
 *  in cache (the wasm kernel's transposeBand). */
static void transposeRows(void *ctx, size_t first, size_t last, size_t part) {
  (void)part;
  const Transpose *t = ctx;
  enum { T = 32 };
#ifdef LOFTQ_X86
  const int vector = isaSupported(ISA_AVX2);
#endif
  for (size_t i0 = first; i0 < last; i0 += T) {
    const size_t i1 = last - i0 < T ? last : i0 + T;
    for (size_t j0 = 0; j0 < t->cols; j0 += T) {
      const size_t j1 = t->cols - j0 < T ? t->cols : j0 + T;
#ifdef LOFTQ_X86
      if (vector) {
        transposeTileAvx2(t, i0, i1, j0, j1);
        continue;
      }
#endif
      for (size_t j = j0; j < j1; j++)
        for (size_t i = i0; i < i1; i++) t->dst[j * t->rows + i] = t->src[i * t->cols + j];
    }
  }
}

typedef struct {
  Transpose *t;
  size_t first;
} TransposeBandPart;

static void transposeBandPart(void *ctx, size_t first, size_t last, size_t part) {
  const TransposeBandPart *b = ctx;
  transposeRows(b->t, b->first + first, b->first + last, part);
}

typedef struct {
  const float *prod; // rows r0 … of the band, `width` columns from r0
  double *g;
  size_t dim, r0, width;
} BandSum;

/** Rows [first, last) of a band's float32 product into g's upper triangle, in float64. */
static void addBandRows(void *ctx, size_t first, size_t last, size_t part) {
  (void)part;
  const BandSum *s = ctx;
  for (size_t k = first; k < last; k++) {
    const size_t i = s->r0 + k;
    const float *p = s->prod + k * s->width - s->r0;
    double *gi = s->g + i * s->dim;
    for (size_t j = i; j < s->dim; j++) gi[j] += p[j];
  }
}

/** First row of band b of BANDS over dim: a multiple of STRIP, so a band's columns start on
 *  a strip of the chunk's packed X. */
static size_t bandStart(size_t dim, size_t b, size_t bands) {
  return b >= bands ? dim : dim * b / bands / STRIP * STRIP;
}

typedef struct {
  const float *prod;
  double *g;
  size_t dim;
  int threads;
} GramSum;

/** A band's products (rows r0 … r1 of Xᵀ·X[:, r0:], w columns) into g's upper triangle in
 *  float64: both gramUpper paths, and gramChunkBf16's GramBand. */
static void addGramBand(void *ctx, size_t r0, size_t r1, size_t w) {
  const GramSum *s = ctx;
  BandSum sum = {s->prod, s->g, s->dim, r0, w};
  parallelFor(r1 - r0, 1, s->threads, addBandRows, &sum);
}

/** The bf16 band product's flops (bf16.c OUT_UPPER): each panel of MR rows from the strip
 *  holding its first row's diagonal to the band's last column. */
static double upperPanelFlops(size_t r0, size_t r1, size_t dim, size_t n) {
  double flops = 0;
  for (size_t row0 = 0; r0 + row0 < r1; row0 += MR) {
    const size_t mr = r1 - r0 - row0 < MR ? r1 - r0 - row0 : MR, skipped = row0 / STRIP * STRIP;
    flops += 2.0 * (double)mr * (double)n * (double)(dim - r0 - skipped);
  }
  return flops;
}

/** g (dim × dim float64, row-major) += the upper triangle (j ≥ i) of X[t0:t1]ᵀ·X[t0:t1], X
 *  being tokens × dim float32: per chunk of tokens, Xᵀ once (transposed in tiles) and X once
 *  (packed into strips), then horizontal bands of Xᵀ times the strips from the band's first
 *  column on (the calibration statistics' XᵀX, model/collect.ts). Products in float32 (in
 *  bf16 when `bf16`: bf16.c), sums in float64. Returns the products' flops, or -1 when memory
 *  ran out. */
static double gramUpper(const float *x, size_t dim, size_t t0, size_t t1, double *g, int threads, Isa isa,
                        int bf16) {
  double flops = 0;
  enum { CHUNK = 2048, BANDS = 8 };
  const size_t strips = (dim + STRIP - 1) / STRIP;
  size_t bandRows = 0, starts[BANDS + 1];
  for (size_t b = 0; b <= BANDS; b++) starts[b] = bandStart(dim, b, BANDS);
  for (size_t b = 0; b < BANDS; b++)
    if (starts[b + 1] - starts[b] > bandRows) bandRows = starts[b + 1] - starts[b];
  for (size_t c0 = t0; c0 < t1; c0 += CHUNK) {
    const size_t n = t1 - c0 < CHUNK ? t1 - c0 : CHUNK;
    size_t xtCapacity, packedCapacity = 0, prodCapacity;
    float *xt = takeBuffer(dim * n * sizeof(float), &xtCapacity);
    float *packed = bf16 ? NULL : takeBuffer(strips * n * STRIP * sizeof(float), &packedCapacity);
    float *prod = takeBuffer(bandRows * dim * sizeof(float), &prodCapacity);
    if (!xt || (!bf16 && !packed) || !prod) {
      giveBuffer(xt, xtCapacity);
      giveBuffer(packed, packedCapacity);
      giveBuffer(prod, prodCapacity);
      return -1;
    }
    Transpose t = {x + c0 * dim, xt, n, dim};
    parallelFor(n, 32, threads, transposeRows, &t);
    int failed = 0;
    GramSum sum = {prod, g, dim, threads};
    if (bf16)
      failed = gramChunkBf16(x + c0 * dim, xt, dim, n, starts, BANDS, prod, addGramBand, &sum, threads) != 0;
    else {
      Pack pack = {x + c0 * dim, dim, NULL, n, dim, packed, 0};
      parallelFor(strips, 1, threads, packStrips, &pack);
      for (size_t b = 0; b < BANDS; b++) {
        const size_t r0 = starts[b], r1 = starts[b + 1], w = dim - r0;
        if (r1 == r0) continue;
        productOnPacked(xt + r0 * n, r1 - r0, n, packed + r0 / STRIP * n * STRIP, w, prod, threads, isa);
        addGramBand(&sum, r0, r1, w);
      }
    }
    for (size_t b = 0; b < BANDS; b++)
      flops += bf16 ? upperPanelFlops(starts[b], starts[b + 1], dim, n)
                    : 2.0 * (double)(starts[b + 1] - starts[b]) * (double)n * (double)(dim - starts[b]);
    giveBuffer(xt, xtCapacity);
    giveBuffer(packed, packedCapacity);
    giveBuffer(prod, prodCapacity);
    if (failed) return -1;
  }
  return flops;
}

// ---- Float64 algebra of the Krylov space ----------------------------------------------------
// The randomized SVD's column-block kernels of server/wasm/kernels.ts (dot products of column
// blocks, blocks of axpys, Gram–Schmidt, Gram matrices) and its symmetric eigensolver, same
// arguments, same algorithms; results differ from the wasm kernels in rounding only (sums in
// another order). A block is `count` contiguous float64 columns of `len` values.

#define COL(block, j, len) ((block) + (size_t)(j) * (size_t)(len))

static double dotGeneric(const double *a, const double *b, size_t len) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= len; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < len; i++) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

#ifdef LOFTQ_X86
/** out[p][j] for a tile of up to 4 columns of A × up to 2 of B, 8 doubles at a time. */
__attribute__((target("avx512f"))) static void dotTile512(const double *const *ap, int np, const double *const *bp,
                                                         int nb, size_t len, double *out, size_t ldo) {
  __m512d acc[4][2];
  for (int p = 0; p < 4; p++) acc[p][0] = acc[p][1] = _mm512_setzero_pd();
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const __m512d x0 = _mm512_loadu_pd(bp[0] + i), x1 = _mm512_loadu_pd(bp[nb - 1] + i);
    for (int p = 0; p < 4; p++) {
      const __m512d y = _mm512_loadu_pd(ap[p < np ? p : np - 1] + i);
      acc[p][0] = _mm512_fmadd_pd(y, x0, acc[p][0]);
      acc[p][1] = _mm512_fmadd_pd(y, x1, acc[p][1]);
    }
  }
  for (int p = 0; p < np; p++)
    for (int q = 0; q < nb; q++) {
      double t = _mm512_reduce_add_pd(acc[p][q]);
      for (size_t r = i; r < len; r++) t += ap[p][r] * bp[q][r];
      out[p * ldo + q] = t;
    }
}
#endif

/** out (pCount × jCount, row-major) = A[:, pFirst…]ᵀ · B[:, jFirst…]; `symmetric` (A = B,
 *  same ranges): the lower triangle mirrored, not computed. */
static void dotBlock(const double *a, size_t pFirst, size_t pCount, const double *b, size_t jFirst, size_t jCount,
                     size_t len, double *out, int symmetric) {
#ifdef LOFTQ_X86
  const int vector = isaSupported(ISA_AVX512);
#else
  const int vector = 0;
#endif
  for (size_t p = 0; p < pCount; p += 4) {
    const int np = (int)(pCount - p < 4 ? pCount - p : 4);
    const double *ap[4];
    for (int q = 0; q < 4; q++) ap[q] = COL(a, pFirst + p + (size_t)(q < np ? q : np - 1), len);
    // Symmetric: from the tile that holds the diagonal of this row group on.
    for (size_t j = symmetric ? p & ~(size_t)1 : 0; j < jCount; j += 2) {
      const int nb = (int)(jCount - j < 2 ? jCount - j : 2);
      const double *bp[2] = {COL(b, jFirst + j, len), COL(b, jFirst + j + (size_t)(nb - 1), len)};
#ifdef LOFTQ_X86
      if (vector) {
        dotTile512(ap, np, bp, nb, len, out + p * jCount + j, jCount);
        continue;
      }
#endif
      (void)vector;
      for (int u = 0; u < np; u++)
        for (int v = 0; v < nb; v++) out[(p + (size_t)u) * jCount + j + (size_t)v] = dotGeneric(ap[u], bp[v], len);
    }
  }
  if (symmetric)
    for (size_t q = 1; q < pCount; q++)
      for (size_t j = 0; j < q; j++) out[q * jCount + j] = out[j * jCount + q];
}

/** X[:, jFirst + j] += alpha · Σ_p A[:, pFirst + p] · c[p·ldc + j], in row chunks that stay in cache. */
static void axpyBlockBody(const double *a, size_t pFirst, size_t pCount, const double *c, size_t ldc, double *x,
                          size_t jFirst, size_t jCount, size_t len, double alpha) {
  enum { CHUNK = 512 };
  for (size_t i0 = 0; i0 < len; i0 += CHUNK) {
    const size_t i1 = len - i0 < CHUNK ? len : i0 + CHUNK;
    for (size_t j = 0; j < jCount; j++) {
      double *xj = COL(x, jFirst + j, len);
      size_t p = 0;
      for (; p + 4 <= pCount; p += 4) {
        const double c0 = alpha * c[p * ldc + j], c1 = alpha * c[(p + 1) * ldc + j];
        const double c2 = alpha * c[(p + 2) * ldc + j], c3 = alpha * c[(p + 3) * ldc + j];
        const double *a0 = COL(a, pFirst + p, len), *a1 = COL(a, pFirst + p + 1, len);
        const double *a2 = COL(a, pFirst + p + 2, len), *a3 = COL(a, pFirst + p + 3, len);
        for (size_t i = i0; i < i1; i++) xj[i] += a0[i] * c0 + a1[i] * c1 + a2[i] * c2 + a3[i] * c3;
      }
      for (; p < pCount; p++) {
        const double cp = alpha * c[p * ldc + j];
        if (cp == 0) continue;
        const double *ap = COL(a, pFirst + p, len);
        for (size_t i = i0; i < i1; i++) xj[i] += cp * ap[i];
      }
    }
  }
}

#ifdef LOFTQ_X86
__attribute__((target("avx512f"))) static void axpyBlock512(const double *a, size_t pFirst, size_t pCount,
                                                           const double *c, size_t ldc, double *x, size_t jFirst,
                                                           size_t jCount, size_t len, double alpha) {
  axpyBlockBody(a, pFirst, pCount, c, ldc, x, jFirst, jCount, len, alpha);
}
#endif

static void axpyBlock(const double *a, size_t pFirst, size_t pCount, const double *c, size_t ldc, double *x,
                      size_t jFirst, size_t jCount, size_t len, double alpha) {
#ifdef LOFTQ_X86
  if (isaSupported(ISA_AVX512)) {
    axpyBlock512(a, pFirst, pCount, c, ldc, x, jFirst, jCount, len, alpha);
    return;
  }
#endif
  axpyBlockBody(a, pFirst, pCount, c, ldc, x, jFirst, jCount, len, alpha);
}

static double dot(const double *a, const double *b, size_t len) {
  double out;
  dotBlock(a, 0, 1, b, 0, 1, len, &out, 0);
  return out;
}

/** The wasm kernel's orthonormalize: columns first … first+count−1 against the earlier ones
 *  (block classical Gram–Schmidt, twice, a third time when the second pass still removed
 *  more than half of a column) and among themselves (each column against the new ones
 *  before it, classical Gram–Schmidt as one block product where the wasm kernel goes column
 *  by column, repeated while the column loses more than half its norm: "twice is enough");
 *  a column left with under 1e-10 of its norm becomes zero. `scratch`: first·count + 2·count
 *  doubles. */
static void orthonormalize(double *block, size_t first, size_t count, size_t len, double *scratch) {
  double *original = scratch, *before = scratch + count, *coef = scratch + 2 * count;
  for (size_t j = 0; j < count; j++) {
    const double *c = COL(block, first + j, len);
    original[j] = sqrt(dot(c, c, len));
  }
  if (first > 0) {
    for (int pass = 0; pass < 3; pass++) {
      if (pass == 2) {
        int again = 0;
        for (size_t j = 0; j < count; j++) {
          const double *c = COL(block, first + j, len);
          if (sqrt(dot(c, c, len)) <= 0.5 * before[j]) again = 1;
        }
        if (!again) break;
      }
      if (pass == 1)
        for (size_t j = 0; j < count; j++) {
          const double *c = COL(block, first + j, len);
          before[j] = sqrt(dot(c, c, len));
        }
      dotBlock(block, 0, first, block, first, count, len, coef, 0);
      axpyBlock(block, 0, first, coef, count, block, first, count, len, -1);
    }
  }
  for (size_t j = first; j < first + count; j++) {
    double *c = COL(block, j, len);
    double prev = sqrt(dot(c, c, len)), norm = prev;
    for (int pass = 0; pass < 3 && j > first; pass++) {
      // This column's coefficients against the new columns before it, then one block update.
      dotBlock(block, first, j - first, c, 0, 1, len, coef, 0);
      axpyBlock(block, first, j - first, coef, 1, c, 0, 1, len, -1);
      norm = sqrt(dot(c, c, len));
      if (norm > 0.5 * prev) break;
      prev = norm;
    }
    const double orig = original[j - first];
    const double inv = norm > 1e-10 * orig && norm > 1e-300 ? 1 / norm : 0;
    for (size_t i = 0; i < len; i++) c[i] *= inv;
  }
}

/** EISPACK's tred2 + tql2 (the wasm kernel's symmetricEigen) on a symmetric row-major n × n
 *  matrix, with rows and columns swapped throughout: the input is the same (symmetric), the
 *  reduction's column walks become contiguous rows, and its result is already Qᵀ, whose rows
 *  the QL rotations turn. `a` ends as the eigenvectors (column j for d[j], unsorted). */
#define AT(i, j) a[(size_t)(i) * (size_t)n + (size_t)(j)]
static void symmetricEigen(double *a, int n, double *d, double *e) {
  for (int j = 0; j < n; j++) d[j] = AT(j, n - 1);
  for (int i = n - 1; i > 0; i--) {
    double scale = 0, h = 0;
    for (int c = 0; c < i; c++) scale += fabs(d[c]);
    if (scale == 0) {
      e[i] = d[i - 1];
      for (int j = 0; j < i; j++) {
        d[j] = AT(j, i - 1);
        AT(j, i) = 0;
        AT(i, j) = 0;
      }
    } else {
      for (int c = 0; c < i; c++) {
        d[c] /= scale;
        h += d[c] * d[c];
      }
      double f = d[i - 1], g = sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (int j = 0; j < i; j++) e[j] = 0;
      for (int j = 0; j < i; j++) {
        f = d[j];
        AT(i, j) = f;
        g = e[j] + AT(j, j) * f;
        const double *row = &AT(j, 0);
        for (int c = j + 1; c <= i - 1; c++) {
          g += row[c] * d[c];
          e[c] += row[c] * f;
        }
        e[j] = g;
      }
      f = 0;
      for (int j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const double hh = f / (h + h);
      for (int j = 0; j < i; j++) e[j] -= hh * d[j];
      for (int j = 0; j < i; j++) {
        f = d[j];
        g = e[j];
        double *row = &AT(j, 0);
        for (int c = j; c <= i - 1; c++) row[c] -= f * e[c] + g * d[c];
        d[j] = AT(j, i - 1);
        AT(j, i) = 0;
      }
    }
    d[i] = h;
  }
  for (int i = 0; i < n - 1; i++) {
    AT(i, n - 1) = AT(i, i);
    AT(i, i) = 1;
    const double h = d[i + 1];
    if (h != 0) {
      const double *next = &AT(i + 1, 0);
      for (int c = 0; c <= i; c++) d[c] = next[c] / h;
      for (int j = 0; j <= i; j++) {
        double *row = &AT(j, 0);
        const double g = dotGeneric(next, row, (size_t)i + 1);
        for (int c = 0; c <= i; c++) row[c] -= g * d[c];
      }
    }
    for (int c = 0; c <= i; c++) AT(i + 1, c) = 0;
  }
  for (int j = 0; j < n; j++) {
    d[j] = AT(j, n - 1);
    AT(j, n - 1) = 0;
  }
  if (n > 0) AT(n - 1, n - 1) = 1;
  e[0] = 0;
  // Implicit QL on the tridiagonal (d, e), turning rows of Qᵀ (contiguous).
  for (int i = 1; i < n; i++) e[i - 1] = e[i];
  if (n > 0) e[n - 1] = 0;
  double f = 0, tst1 = 0;
  const double eps = 2.220446049250313e-16;
  for (int l = 0; l < n; l++) {
    tst1 = fmax(tst1, fabs(d[l]) + fabs(e[l]));
    int m = l;
    while (m < n && fabs(e[m]) > eps * tst1) m++;
    if (m > l) {
      for (int iter = 0; iter < 100; iter++) {
        double g = d[l];
        double p = (d[l + 1] - g) / (2 * e[l]);
        double r = hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const double dl1 = d[l + 1];
        double h = g - d[l];
        for (int i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        double c = 1, c2 = 1, c3 = 1, s = 0, s2 = 0;
        const double el1 = e[l + 1];
        for (int i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          double *x = &AT(i + 1, 0), *y = &AT(i, 0);
          for (int j = 0; j < n; j++) {
            const double xj = x[j], yj = y[j];
            x[j] = s * yj + c * xj;
            y[j] = c * yj - s * xj;
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]) / dl1;
        e[l] = s * p;
        d[l] = c * p;
        if (!(fabs(e[l]) > eps * tst1)) break;
      }
    }
    d[l] += f;
    e[l] = 0;
  }
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++) {
      const double t = AT(i, j);
      AT(i, j) = AT(j, i);
      AT(j, i) = t;
    }
}
#undef AT

// ---- Attention of the forward pass ---------------------------------------------------------
// model/ops.ts's causal attention (float64 scores and sums over float32 q, k, v; grouped
// heads; an optional sliding window) and SiLU gate, split over heads and rows. Under the
// native backend the calibration pass and `loftq eval` run these instead of JavaScript
// loops; they differ from them in the last bits of a float64 sum.

/** Σ a[e]·b[e] over float32 vectors, in float64. */
typedef double DotF32(const float *a, const float *b, size_t n);
/** acc[e] += p·v[e], acc float64, v float32. */
typedef void AxpyF32(double *acc, double p, const float *v, size_t n);

static double dotF32Generic(const float *a, const float *b, size_t n) {
  double s = 0;
  for (size_t e = 0; e < n; e++) s += (double)a[e] * (double)b[e];
  return s;
}

static void axpyF32Generic(double *acc, double p, const float *v, size_t n) {
  for (size_t e = 0; e < n; e++) acc[e] += p * (double)v[e];
}

#ifdef LOFTQ_X86
// A head's 64 values in 8 float64 lanes: the scalar loop (one float64 multiply-add per cycle)
// was most of the pass's attention, ~1 s per layer of a 1.1B model at 16×256 tokens.
__attribute__((target("avx512f"))) static double dotF32Avx512(const float *a, const float *b, size_t n) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  size_t e = 0;
  for (; e + 16 <= n; e += 16) {
    s0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + e)), _mm512_cvtps_pd(_mm256_loadu_ps(b + e)), s0);
    s1 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + e + 8)), _mm512_cvtps_pd(_mm256_loadu_ps(b + e + 8)), s1);
  }
  for (; e + 8 <= n; e += 8)
    s0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + e)), _mm512_cvtps_pd(_mm256_loadu_ps(b + e)), s0);
  double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
  for (; e < n; e++) s += (double)a[e] * (double)b[e];
  return s;
}

__attribute__((target("avx512f"))) static void axpyF32Avx512(double *acc, double p, const float *v, size_t n) {
  const __m512d pv = _mm512_set1_pd(p);
  size_t e = 0;
  for (; e + 8 <= n; e += 8)
    _mm512_storeu_pd(acc + e, _mm512_fmadd_pd(pv, _mm512_cvtps_pd(_mm256_loadu_ps(v + e)), _mm512_loadu_pd(acc + e)));
  for (; e < n; e++) acc[e] += p * (double)v[e];
}

__attribute__((target("avx2,fma"))) static double dotF32Avx2(const float *a, const float *b, size_t n) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  size_t e = 0;
  for (; e + 8 <= n; e += 8) {
    s0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + e)), _mm256_cvtps_pd(_mm_loadu_ps(b + e)), s0);
    s1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + e + 4)), _mm256_cvtps_pd(_mm_loadu_ps(b + e + 4)), s1);
  }
  double lanes[4];
  _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
  double s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  for (; e < n; e++) s += (double)a[e] * (double)b[e];
  return s;
}

__attribute__((target("avx2,fma"))) static void axpyF32Avx2(double *acc, double p, const float *v, size_t n) {
  const __m256d pv = _mm256_set1_pd(p);
  size_t e = 0;
  for (; e + 4 <= n; e += 4)
    _mm256_storeu_pd(acc + e, _mm256_fmadd_pd(pv, _mm256_cvtps_pd(_mm_loadu_ps(v + e)), _mm256_loadu_pd(acc + e)));
  for (; e < n; e++) acc[e] += p * (double)v[e];
}
#endif

typedef struct {
  const float *qkv;
  float *out;
  const int64_t *starts, *lens, *outRows;
  size_t sequences, heads, kvHeads, d, stride, qOff, kOff, vOff, window;
  DotF32 *dot;
  AxpyF32 *axpy;
} Attention;

static void attentionHeads(void *ctx, size_t h0, size_t h1, size_t part) {
  (void)part;
  const Attention *a = ctx;
  const size_t group = a->heads / a->kvHeads, width = a->heads * a->d;
  const double scale = 1 / sqrt((double)a->d);
  size_t maxLen = 0;
  for (size_t k = 0; k < a->sequences; k++)
    if ((size_t)a->lens[k] > maxLen) maxLen = (size_t)a->lens[k];
  double *scores = malloc((maxLen + a->d) * sizeof(double));
  if (!scores) return;
  double *acc = scores + maxLen;
  for (size_t h = h0; h < h1; h++) {
    const size_t kvh = h / group, qo = a->qOff + h * a->d, ko = a->kOff + kvh * a->d, vo = a->vOff + kvh * a->d;
    for (size_t k = 0; k < a->sequences; k++) {
      const size_t start = (size_t)a->starts[k], len = (size_t)a->lens[k];
      for (size_t i = 0; i < len; i++) {
        const float *q = a->qkv + (start + i) * a->stride + qo;
        const size_t j0 = a->window && i + 1 > a->window ? i + 1 - a->window : 0;
        double max = -INFINITY;
        for (size_t j = j0; j <= i; j++) {
          const float *kj = a->qkv + (start + j) * a->stride + ko;
          scores[j] = a->dot(q, kj, a->d) * scale;
          if (scores[j] > max) max = scores[j];
        }
        double sum = 0;
        for (size_t j = j0; j <= i; j++) sum += scores[j] = exp(scores[j] - max);
        for (size_t e = 0; e < a->d; e++) acc[e] = 0;
        for (size_t j = j0; j <= i; j++) {
          const double p = scores[j] / sum;
          a->axpy(acc, p, a->qkv + (start + j) * a->stride + vo, a->d);
        }
        float *o = a->out + ((size_t)a->outRows[k] + i) * width + h * a->d;
        for (size_t e = 0; e < a->d; e++) o[e] = (float)acc[e];
      }
    }
  }
  free(scores);
}

typedef struct {
  const float *gu;
  float *out;
  size_t inter;
} SiluGate;

static void siluGateRows(void *ctx, size_t t0, size_t t1, size_t part) {
  (void)part;
  const SiluGate *s = ctx;
  for (size_t t = t0; t < t1; t++) {
    const float *g = s->gu + t * 2 * s->inter, *u = g + s->inter;
    float *o = s->out + t * s->inter;
    for (size_t i = 0; i < s->inter; i++) o[i] = (float)(((double)g[i] / (1 + exp(-(double)g[i]))) * (double)u[i]);
  }
}

// ---- Node-API ----------------------------------------------------------------------------

typedef struct {
  float *data;
  size_t rows, cols, capacity;
  /** Set when data is the caller's shared memory (holdView), not a copy. */
  napi_ref view;
  /** data holds bf16 rows of bf16Stride(cols) values (holdStrictLowerBandBf16). */
  int bf16;
} Held;

/** Lets go of a held matrix's data: the copy back to the cache, or the view's reference. */
static void dropHeld(napi_env env, Held *h) {
  if (h->view) {
    napi_delete_reference(env, h->view);
    h->view = NULL;
  } else if (h->data) {
    napi_adjust_external_memory(env, -(int64_t)h->capacity, NULL);
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

/** The data and length of a typed array of the given kind: 1, or 0 when v is not one. */
static int typedArg(napi_env env, napi_value v, napi_typedarray_type kind, void **data, size_t *length) {
  bool is;
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return 0;
  if (napi_get_typedarray_info(env, v, &type, length, data, &buffer, &offset) != napi_ok) return 0;
  return type == kind;
}

static int float32Arg(napi_env env, napi_value v, float **data, size_t *length) {
  return typedArg(env, v, napi_float32_array, (void **)data, length);
}

static int float64Arg(napi_env env, napi_value v, double **data, size_t *length) {
  return typedArg(env, v, napi_float64_array, (void **)data, length);
}

static int int64ArrayArg(napi_env env, napi_value v, int64_t **data, size_t *length) {
  return typedArg(env, v, napi_bigint64_array, (void **)data, length);
}

/** A thread count from JavaScript, capped at MAX_THREADS (and at least 1 in parallelFor). */
static int threadCount(size_t threads) { return (int)(threads > MAX_THREADS ? MAX_THREADS : threads); }

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

/** A held matrix of rows × cols floats (bf16: rows of bf16Stride(cols) bf16 values) owning a
 *  buffer from the cache, not yet filled; NULL (a RangeError thrown) when memory ran out. */
static Held *newHeld(napi_env env, size_t rows, size_t cols, int bf16) {
  Held *h = calloc(1, sizeof *h);
  const size_t bytes = bf16 ? rows * bf16Stride(cols) * sizeof(uint16_t) : rows * cols * sizeof(float);
  if (h) h->data = takeBuffer(bytes, &h->capacity);
  if (!h || !h->data) {
    free(h);
    napi_throw_range_error(env, NULL, "native backend: out of memory holding a matrix");
    return NULL;
  }
  h->rows = rows;
  h->cols = cols;
  h->bf16 = bf16;
  napi_adjust_external_memory(env, (int64_t)h->capacity, NULL);
  return h;
}

static Held *newHeldCopy(napi_env env, size_t rows, size_t cols) { return newHeld(env, rows, cols, 0); }

/** The handle that owns h (released by release or at garbage collection). */
static napi_value heldHandle(napi_env env, Held *h) {
  napi_value out;
  if (napi_create_external(env, h, finalizeHeld, NULL, &out) != napi_ok) {
    finalizeHeld(env, h, NULL);
    return fail(env, "hold: could not create a handle");
  }
  return out;
}

/** hold / holdView: validates (a, rows, cols) and makes the handle — holding a copy, or
 *  (inPlace) the caller's shared memory itself, kept alive by a reference until release. */
static napi_value holdMatrix(napi_env env, napi_callback_info info, int inPlace) {
  const char *name = inPlace ? "holdView" : "hold";
  char message[80];
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  float *a;
  size_t len, rows, cols;
  if (argc != 3 || !float32Arg(env, argv[0], &a, &len) || !sizeArg(env, argv[1], &rows) ||
      !sizeArg(env, argv[2], &cols)) {
    snprintf(message, sizeof message, "%s(a: Float32Array, rows, cols)", name);
    return fail(env, message);
  }
  const char *problem = rows != 0 && cols > SIZE_MAX / sizeof(float) / rows ? "matrix too large"
                        : len != rows * cols                                 ? "a.length is not rows × cols"
                                                                             : NULL;
  if (problem) {
    snprintf(message, sizeof message, "%s: %s", name, problem);
    return fail(env, message);
  }
  if (!inPlace) {
    Held *h = newHeldCopy(env, rows, cols);
    if (!h) return NULL;
    memcpy(h->data, a, rows * cols * sizeof(float));
    return heldHandle(env, h);
  }
  Held *h = calloc(1, sizeof *h);
  if (!h) {
    napi_throw_range_error(env, NULL, "native backend: out of memory holding a matrix");
    return NULL;
  }
  h->data = a;
  h->rows = rows;
  h->cols = cols;
  if (napi_create_reference(env, argv[0], 1, &h->view) != napi_ok) {
    free(h);
    return fail(env, "holdView: could not keep the view");
  }
  return heldHandle(env, h);
}

/** hold(a, rows, cols): a copy of A owned by the returned handle. */
static napi_value Hold(napi_env env, napi_callback_info info) { return holdMatrix(env, info, 0); }

/** holdView(a, rows, cols): A read in place — for a view of shared memory, which can be
 *  neither detached nor moved, and which the engine does not write while it is held (the
 *  contract of DeviceMatrix: loftq.ts). Saves a copy of the matrix per hold, and the fresh
 *  pages it would take. */
static napi_value HoldView(napi_env env, napi_callback_info info) { return holdMatrix(env, info, 1); }

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
  if (h->bf16) return fail(env, "times: not on a bf16 matrix");
  if (multiply(h->data, h->rows, h->cols, b, n, n, out, threadCount(threads), isa)) {
    napi_throw_range_error(env, NULL, "native backend: out of memory in a product");
    return NULL;
  }
  return NULL;
}

/** timesTransposed(held, w, n, out, threads, isa, bf16?): out (rows × n) = A · Wᵀ, w being
 *  n × cols row-major (a linear layer's [out, in] weight) or an array of such blocks stacked by
 *  rows (Σ rows = n): a group's weights without a stacked or transposed copy of them. With
 *  bf16 = 1, A and W are rounded to bf16 (bf16.c; throws without AVX512-BF16). */
static napi_value TimesTransposed(napi_env env, napi_callback_info info) {
  static const char usage[] = "timesTransposed(held, w: Float32Array | Float32Array[] | Uint16Array[] (bf16, bf16 "
                              "products only), n, out: Float32Array, threads, isa, bf16?)";
  size_t argc = 7;
  napi_value argv[7];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Held *h = argc == 6 || argc == 7 ? heldArg(env, argv[0]) : NULL;
  float *out;
  size_t outLen, n, threads, bf16 = 0;
  Isa isa;
  bool isArray = false;
  uint32_t blocks = 1;
  if (!h || !sizeArg(env, argv[2], &n) || !float32Arg(env, argv[3], &out, &outLen) ||
      !sizeArg(env, argv[4], &threads) || !isaArg(env, argv[5], &isa) || (argc == 7 && !sizeArg(env, argv[6], &bf16)) ||
      napi_is_array(env, argv[1], &isArray) != napi_ok ||
      (isArray && napi_get_array_length(env, argv[1], &blocks) != napi_ok))
    return fail(env, usage);
  if (bf16 && !bf16Supported()) return fail(env, "timesTransposed: this CPU has no AVX512-BF16");
  if (!h->data) return fail(env, "timesTransposed: the matrix was released");
  if (h->bf16) return fail(env, "timesTransposed: not on a bf16 matrix");
  const size_t cols = h->cols;
  if (cols != 0 && n > SIZE_MAX / sizeof(float) / cols) return fail(env, "timesTransposed: block too large");
  if (outLen != h->rows * n) return fail(env, "timesTransposed: shape mismatch");
  // The packing reads W's rows wherever they lie: a pointer each, taken only where there is a
  // product to pack for (n is then bounded by out's length).
  const int product = h->rows != 0 && cols != 0;
  const void **wRows = product ? malloc(n * sizeof *wRows) : NULL;
  if (product && !wRows) {
    napi_throw_range_error(env, NULL, "native backend: out of memory in a product");
    return NULL;
  }
  const char *problem = NULL;
  size_t filled = 0;
  // Every block float32, or (bf16 products) every block bf16 bit patterns: a BF16 checkpoint's
  // weights go in as read, without a float32 copy.
  int rowsBf16 = -1;
  for (uint32_t i = 0; i < blocks && !problem; i++) {
    napi_value v = argv[1];
    void *w;
    size_t len;
    int isBf16 = 0;
    if (isArray && napi_get_element(env, argv[1], i, &v) != napi_ok)
      problem = usage;
    else if (float32Arg(env, v, (float **)&w, &len))
      isBf16 = 0;
    else if (bf16 && typedArg(env, v, napi_uint16_array, &w, &len))
      isBf16 = 1;
    else
      problem = usage;
    if (problem) break;
    if (rowsBf16 >= 0 && rowsBf16 != isBf16) problem = "timesTransposed: float32 and bf16 weights mixed";
    else if (cols == 0 ? len != 0 : len % cols != 0 || len / cols > n - filled)
      problem = "timesTransposed: shape mismatch";
    else
      for (size_t r = 0; cols != 0 && r < len / cols; r++, filled++)
        if (wRows) wRows[filled] = isBf16 ? (const void *)((const uint16_t *)w + r * cols) : (const void *)((const float *)w + r * cols);
    rowsBf16 = isBf16;
  }
  if (!problem && cols != 0 && filled != n) problem = "timesTransposed: shape mismatch";
  const int failed =
      problem ? 0
      : bf16  ? multiplyTransposedBf16(h->data, h->rows, cols, (const void *const *)wRows, rowsBf16 == 1, n, out,
                                       threadCount(threads))
              : multiplyTransposed(h->data, h->rows, cols, (const float *const *)wRows, n, out, threadCount(threads), isa);
  free(wRows);
  if (problem) return fail(env, problem);
  if (failed) {
    napi_throw_range_error(env, NULL, "native backend: out of memory in a product");
    return NULL;
  }
  return NULL;
}

/** gramUpper(x: Float32Array, dim, t0, t1, g: Float64Array, threads, isa, bf16?) → flops: g's
 *  upper triangle += X[t0:t1]ᵀ·X[t0:t1] (x: tokens × dim); bf16 = 1: X rounded to bf16 in the
 *  products (throws without AVX512-BF16). */
static napi_value GramUpper(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  float *x;
  double *g;
  size_t xLen, gLen, dim, t0, t1, threads, bf16 = 0;
  Isa isa;
  if ((argc != 7 && argc != 8) || !float32Arg(env, argv[0], &x, &xLen) || !sizeArg(env, argv[1], &dim) ||
      !sizeArg(env, argv[2], &t0) || !sizeArg(env, argv[3], &t1) || !float64Arg(env, argv[4], &g, &gLen) ||
      !sizeArg(env, argv[5], &threads) || !isaArg(env, argv[6], &isa) || (argc == 8 && !sizeArg(env, argv[7], &bf16)))
    return fail(env, "gramUpper(x: Float32Array, dim, t0, t1, g: Float64Array, threads, isa, bf16?)");
  if (dim == 0 || dim > (1u << 20) || t0 > t1 || xLen / dim < t1 || gLen != dim * dim)
    return fail(env, "gramUpper: shape mismatch");
  if (bf16 && !bf16Supported()) return fail(env, "gramUpper: this CPU has no AVX512-BF16");
  const double flops = gramUpper(x, dim, t0, t1, g, threadCount(threads), isa, bf16 != 0);
  if (flops < 0) {
    napi_throw_range_error(env, NULL, "native backend: out of memory in XᵀX");
    return NULL;
  }
  napi_value out;
  CHECK(napi_create_double(env, flops, &out));
  return out;
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
  return typedArg(env, v, napi_uint8_array, (void **)&m->base, &m->length);
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

/** Parses (memory, …count numbers[, threads]) into m and a[0 … count], a[count] being the
 *  thread count (1 when absent): 1, or 0 with a TypeError thrown naming `usage`. */
static int kernelArgs(napi_env env, napi_callback_info info, size_t count, Memory *m, double *a, const char *usage) {
  size_t argc = 16;
  napi_value argv[16];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < count + 1 || argc > count + 2 ||
      !memoryArg(env, argv[0], m) || !numbers(env, argv + 1, argc - 1, a) ||
      (argc == count + 2 && !(a[count] >= 1 && a[count] <= MAX_THREADS))) {
    fail(env, usage);
    return 0;
  }
  if (argc == count + 1) a[count] = 1;
  return 1;
}

static int counts(const double *a, const int *which, int n) {
  for (int i = 0; i < n; i++)
    if (!wholeCount(a[which[i]], 1 << 30)) return 0;
  return 1;
}

static napi_value outsideMemory(napi_env env, const char *kernel) {
  char message[96];
  snprintf(message, sizeof message, "%s: a region lies outside the memory", kernel);
  return fail(env, message);
}

static napi_value sumResult(napi_env env, double sum) {
  napi_value out;
  if (isnan(sum)) {
    napi_throw_range_error(env, NULL, "native kernels: out of memory");
    return NULL;
  }
  CHECK(napi_create_double(env, sum, &out));
  return out;
}

/** quantizeAbsMaxResidual(memory, x, n, blockSize, scales, table, tableLen, cells, codes,
 *  values, w, residual[, threads]) → Σ residual². */
static napi_value QuantizeAbsMaxResidual(napi_env env, napi_callback_info info) {
  Memory m;
  double a[12];
  if (!kernelArgs(env, info, 11, &m, a, "quantizeAbsMaxResidual(memory: Uint8Array, …11 numbers[, threads])"))
    return NULL;
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
    return outsideMemory(env, "quantizeAbsMaxResidual");
  return sumResult(env, quantizeAbsMaxResidual(x, (size_t)n, (size_t)blockSize, scales, table, (int)tableLen, cells,
                                               codes, values, w, residual, (int)a[11]));
}

/** lowRankStep(memory, w, q, b, a, rows, cols, r, target (0: none), scratch[, threads]) → Σ (w − q − B·A)². */
static napi_value LowRankStep(napi_env env, napi_callback_info info) {
  Memory m;
  double a[10];
  if (!kernelArgs(env, info, 9, &m, a, "lowRankStep(memory: Uint8Array, …9 numbers[, threads])")) return NULL;
  const double rows = a[4], cols = a[5], r = a[6];
  if (!wholeCount(rows, 1 << 30) || !wholeCount(cols, 1 << 30) || !wholeCount(r, 1 << 20))
    return fail(env, "lowRankStep: bad sizes");
  const double size = rows * cols;
  float *w = region(&m, a[0], 4 * size), *q = region(&m, a[1], 4 * size), *bf = region(&m, a[2], 4 * rows * r);
  float *af = region(&m, a[3], 4 * r * cols), *scratch = region(&m, a[8], 4 * (r > 1 ? r : 1) * cols);
  float *target = a[7] == 0 ? NULL : region(&m, a[7], 4 * size);
  if (!w || !q || !bf || !af || !scratch || (a[7] != 0 && !target)) return outsideMemory(env, "lowRankStep");
  return sumResult(env, lowRankStep(w, q, bf, af, (size_t)rows, (size_t)cols, (size_t)r, target, scratch, (int)a[9]));
}

/** transposeBand(memory, src, rows, cols, dst, first, last[, threads]). */
static napi_value TransposeBand(napi_env env, napi_callback_info info) {
  Memory m;
  double a[7];
  if (!kernelArgs(env, info, 6, &m, a, "transposeBand(memory: Uint8Array, …6 numbers[, threads])")) return NULL;
  if (!counts(a, (const int[]){1, 2, 4, 5}, 4) || a[4] > a[5] || a[5] > a[1]) return fail(env, "transposeBand: bad sizes");
  float *src = region(&m, a[0], 4 * a[1] * a[2]), *dst = region(&m, a[3], 4 * a[1] * a[2]);
  if (!src || !dst) return outsideMemory(env, "transposeBand");
  Transpose t = {src, dst, (size_t)a[1], (size_t)a[2]};
  const size_t first = (size_t)a[4];
  // Parts of the band on 32-row boundaries from its first row.
  TransposeBandPart part = {&t, first};
  parallelFor((size_t)a[5] - first, 32, (int)a[6], transposeBandPart, &part);
  return NULL;
}

/** dotBlock(memory, a, pFirst, pCount, b, jFirst, jCount, len, out, symmetric). */
static napi_value DotBlock(napi_env env, napi_callback_info info) {
  Memory m;
  double a[10];
  if (!kernelArgs(env, info, 9, &m, a, "dotBlock(memory: Uint8Array, …9 numbers)")) return NULL;
  if (!counts(a, (const int[]){1, 2, 4, 5, 6}, 5)) return fail(env, "dotBlock: bad sizes");
  const double len = a[6];
  double *pa = region(&m, a[0], 8 * (a[1] + a[2]) * len), *pb = region(&m, a[3], 8 * (a[4] + a[5]) * len);
  double *out = region(&m, a[7], 8 * a[2] * a[5]);
  if (!pa || !pb || !out) return outsideMemory(env, "dotBlock");
  dotBlock(pa, (size_t)a[1], (size_t)a[2], pb, (size_t)a[4], (size_t)a[5], (size_t)len, out, a[8] != 0);
  return NULL;
}

/** axpyBlock(memory, a, pFirst, pCount, c, ldc, x, jFirst, jCount, len, alpha). */
static napi_value AxpyBlock(napi_env env, napi_callback_info info) {
  Memory m;
  double a[11];
  if (!kernelArgs(env, info, 10, &m, a, "axpyBlock(memory: Uint8Array, …10 numbers)")) return NULL;
  if (!counts(a, (const int[]){1, 2, 4, 6, 7, 8}, 6)) return fail(env, "axpyBlock: bad sizes");
  const double len = a[8];
  double *pa = region(&m, a[0], 8 * (a[1] + a[2]) * len);
  double *c = region(&m, a[3], a[2] > 0 && a[7] > 0 ? 8 * ((a[2] - 1) * a[4] + a[7]) : 0);
  double *x = region(&m, a[5], 8 * (a[6] + a[7]) * len);
  if (!pa || !c || !x) return outsideMemory(env, "axpyBlock");
  axpyBlock(pa, (size_t)a[1], (size_t)a[2], c, (size_t)a[4], x, (size_t)a[6], (size_t)a[7], (size_t)len, a[9]);
  return NULL;
}

/** orthonormalize(memory, block, first, count, len, scratch). */
static napi_value Orthonormalize(napi_env env, napi_callback_info info) {
  Memory m;
  double a[6];
  if (!kernelArgs(env, info, 5, &m, a, "orthonormalize(memory: Uint8Array, …5 numbers)")) return NULL;
  if (!counts(a, (const int[]){1, 2, 3}, 3)) return fail(env, "orthonormalize: bad sizes");
  double *block = region(&m, a[0], 8 * (a[1] + a[2]) * a[3]);
  double *scratch = region(&m, a[4], 8 * (a[1] * a[2] + 2 * a[2]));
  if (!block || !scratch) return outsideMemory(env, "orthonormalize");
  orthonormalize(block, (size_t)a[1], (size_t)a[2], (size_t)a[3], scratch);
  return NULL;
}

/** gram(memory, block, count, len, out). */
static napi_value Gram(napi_env env, napi_callback_info info) {
  Memory m;
  double a[5];
  if (!kernelArgs(env, info, 4, &m, a, "gram(memory: Uint8Array, …4 numbers)")) return NULL;
  if (!counts(a, (const int[]){1, 2}, 2)) return fail(env, "gram: bad sizes");
  double *block = region(&m, a[0], 8 * a[1] * a[2]), *out = region(&m, a[3], 8 * a[1] * a[1]);
  if (!block || !out) return outsideMemory(env, "gram");
  dotBlock(block, 0, (size_t)a[1], block, 0, (size_t)a[1], (size_t)a[2], out, 1);
  return NULL;
}

/** symmetricEigen(memory, a, n, d, e). */
static napi_value SymmetricEigen(napi_env env, napi_callback_info info) {
  Memory m;
  double a[5];
  if (!kernelArgs(env, info, 4, &m, a, "symmetricEigen(memory: Uint8Array, …4 numbers)")) return NULL;
  if (!wholeCount(a[1], 1 << 15)) return fail(env, "symmetricEigen: bad size");
  double *pa = region(&m, a[0], 8 * a[1] * a[1]), *d = region(&m, a[2], 8 * a[1]), *e = region(&m, a[3], 8 * a[1]);
  if (!pa || !d || !e) return outsideMemory(env, "symmetricEigen");
  symmetricEigen(pa, (int)a[1], d, e);
  return NULL;
}

/** symmetrizeScaled(g: Float64Array, dim, scale, threads) (statistics.c). */
static napi_value SymmetrizeScaled(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  double *g, scale;
  size_t gLen, dim, threads;
  if (argc != 4 || !float64Arg(env, argv[0], &g, &gLen) || !sizeArg(env, argv[1], &dim) ||
      napi_get_value_double(env, argv[2], &scale) != napi_ok || !sizeArg(env, argv[3], &threads))
    return fail(env, "symmetrizeScaled(g, dim, scale, threads)");
  if (dim > (1u << 16) || gLen != dim * dim) return fail(env, "symmetrizeScaled: bad sizes");
  symmetrizeScaled(g, dim, scale, threadCount(threads));
  return NULL;
}

/** holdTriangleBand(g: Float64Array, dim, r0, r1, upper, threads): row band [r0, r1) of g's
 *  lower triangle (upper 0: columns [0, r1)) or upper triangle (1: columns [r0, dim)), zeros
 *  off it, converted to float32 straight into a held matrix (statistics.c) — a held metric's
 *  band without a float32 copy in JavaScript for hold to copy again (a 5632-wide G's 16 bands
 *  are 142 MB). */
static napi_value HoldTriangleBand(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  double *g;
  size_t gLen, dim, r0, r1, upper, threads;
  if (argc != 6 || !float64Arg(env, argv[0], &g, &gLen) || !sizeArg(env, argv[1], &dim) ||
      !sizeArg(env, argv[2], &r0) || !sizeArg(env, argv[3], &r1) || !sizeArg(env, argv[4], &upper) ||
      !sizeArg(env, argv[5], &threads))
    return fail(env, "holdTriangleBand(g: Float64Array, dim, r0, r1, upper, threads)");
  if (dim > (1u << 16) || gLen != dim * dim || r0 > r1 || r1 > dim) return fail(env, "holdTriangleBand: bad sizes");
  Held *h = newHeldCopy(env, r1 - r0, upper ? dim - r0 : r1);
  if (!h) return NULL;
  triangleBandToFloat32(g, dim, r0, r1, upper != 0, h->data, threadCount(threads));
  return heldHandle(env, h);
}

/** holdStrictLowerBandBf16(g: Float64Array, dim, r0, r1, threads): row band [r0, r1) of g's
 *  strictly lower triangle, columns [0, r1), held as bf16 for bf16 products (bf16.c): the
 *  off-diagonal part of the output-error measure (loftq/heldMetric.ts). Throws without
 *  AVX512-BF16 (bf16Supported()). */
static napi_value HoldStrictLowerBandBf16(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  double *g;
  size_t gLen, dim, r0, r1, threads;
  if (argc != 5 || !float64Arg(env, argv[0], &g, &gLen) || !sizeArg(env, argv[1], &dim) ||
      !sizeArg(env, argv[2], &r0) || !sizeArg(env, argv[3], &r1) || !sizeArg(env, argv[4], &threads))
    return fail(env, "holdStrictLowerBandBf16(g: Float64Array, dim, r0, r1, threads)");
  if (dim > (1u << 16) || gLen != dim * dim || r0 > r1 || r1 > dim)
    return fail(env, "holdStrictLowerBandBf16: bad sizes");
  if (!bf16Supported()) return fail(env, "holdStrictLowerBandBf16: this CPU has no AVX512-BF16");
  Held *h = newHeld(env, r1 - r0, r1, 1);
  if (!h) return NULL;
  strictLowerBandToBf16(g, dim, r0, r1, (uint16_t *)(void *)h->data, threadCount(threads));
  return heldHandle(env, h);
}

/** measureBf16(bands: object[], b: Float32Array, n, w: Float64Array, threads) → tr(bᵀ·H·b) for
 *  H = T + Tᵀ + diag(w), T the strictly lower triangle held in `bands` (holdStrictLowerBandBf16,
 *  in order, together covering rows 0 … dim − 1), b dim × n, dim = w.length (bf16.c). */
static napi_value MeasureBf16(napi_env env, napi_callback_info info) {
  static const char usage[] = "measureBf16(bands: object[], b: Float32Array, n, w: Float64Array, threads)";
  enum { MAX_BANDS = 1024 };
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool isArray = false;
  float *b;
  double *w;
  size_t bLen, wLen, n, threads;
  uint32_t count = 0;
  if (argc != 5 || napi_is_array(env, argv[0], &isArray) != napi_ok || !isArray ||
      napi_get_array_length(env, argv[0], &count) != napi_ok || count > MAX_BANDS ||
      !float32Arg(env, argv[1], &b, &bLen) || !sizeArg(env, argv[2], &n) || !float64Arg(env, argv[3], &w, &wLen) ||
      !sizeArg(env, argv[4], &threads))
    return fail(env, usage);
  const uint16_t *a[MAX_BANDS];
  size_t rows[MAX_BANDS], cols[MAX_BANDS], covered = 0;
  for (uint32_t k = 0; k < count; k++) {
    napi_value v;
    CHECK(napi_get_element(env, argv[0], k, &v));
    const Held *h = heldArg(env, v);
    if (!h || !h->bf16) return fail(env, usage);
    if (!h->data) return fail(env, "measureBf16: a band was released");
    // Bands in order, each ending where its columns end, together covering every row.
    if (h->cols != covered + h->rows) return fail(env, "measureBf16: the bands do not tile the rows");
    a[k] = (const uint16_t *)(const void *)h->data;
    rows[k] = h->rows;
    cols[k] = h->cols;
    covered = h->cols;
  }
  if (covered != wLen || (wLen != 0 && n > SIZE_MAX / sizeof(float) / wLen) || bLen != wLen * n)
    return fail(env, "measureBf16: shape mismatch");
  double total;
  const int r = measureBf16(a, rows, cols, count, b, wLen, n, w, threadCount(threads), &total);
  if (r == -2) return fail(env, "measureBf16: this CPU has no AVX512-BF16");
  if (r) {
    napi_throw_range_error(env, NULL, "native backend: out of memory in a product");
    return NULL;
  }
  napi_value out;
  CHECK(napi_create_double(env, total, &out));
  return out;
}

/** bf16(): whether this CPU runs the bf16 products. */
static napi_value Bf16(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  CHECK(napi_get_boolean(env, bf16Supported(), &out));
  return out;
}

/** attention(qkv, out, seq: BigInt64Array [start, len, outRow]…, heads, kvHeads, headDim,
 *  stride, qOff, kOff, vOff, window (0: none), threads): 9 numbers after the arrays. */
static napi_value AttentionFn(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  float *qkv, *out;
  int64_t *seq;
  size_t qkvLen, outLen, seqLen, v[9];
  int ok = argc == 12 && float32Arg(env, argv[0], &qkv, &qkvLen) && float32Arg(env, argv[1], &out, &outLen) &&
           int64ArrayArg(env, argv[2], &seq, &seqLen) && seqLen % 3 == 0;
  for (int i = 0; ok && i < 9; i++) ok = sizeArg(env, argv[3 + i], &v[i]);
  if (!ok) return fail(env, "attention(qkv, out, seq: BigInt64Array, …9 numbers)");
  const size_t heads = v[0], kvHeads = v[1], d = v[2], stride = v[3], qOff = v[4], kOff = v[5], vOff = v[6];
  if (!heads || !kvHeads || heads % kvHeads || !d || qOff + heads * d > stride || kOff + kvHeads * d > stride ||
      vOff + kvHeads * d > stride)
    return fail(env, "attention: bad shape");
  const size_t n = seqLen / 3;
  int64_t *starts = malloc(3 * (n ? n : 1) * sizeof(int64_t));
  if (!starts) return fail(env, "attention: out of memory");
  int64_t *lens = starts + n, *rows = lens + n;
  for (size_t k = 0; k < n; k++) {
    starts[k] = seq[3 * k];
    lens[k] = seq[3 * k + 1];
    rows[k] = seq[3 * k + 2];
    // Every row read or written inside the arrays.
    if (starts[k] < 0 || lens[k] < 0 || rows[k] < 0 || (size_t)(starts[k] + lens[k]) * stride > qkvLen ||
        (size_t)(rows[k] + lens[k]) * heads * d > outLen) {
      free(starts);
      return fail(env, "attention: a sequence lies outside qkv or out");
    }
  }
  Attention a = {qkv,  out,    starts, lens, rows, n,    heads,          kvHeads,
                 d,    stride, qOff,   kOff, vOff, v[7], dotF32Generic, axpyF32Generic};
#ifdef LOFTQ_X86
  const Isa isa = bestIsa();
  if (isa == ISA_AVX512) a.dot = dotF32Avx512, a.axpy = axpyF32Avx512;
  else if (isa == ISA_AVX2) a.dot = dotF32Avx2, a.axpy = axpyF32Avx2;
#endif
  parallelFor(heads, 1, threadCount(v[8]), attentionHeads, &a);
  free(starts);
  return NULL;
}

/** siluGate(gu, tokens, inter, out, threads): out = silu(gate) · up per row of [gate | up]. */
static napi_value SiluGateFn(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  float *gu, *out;
  size_t guLen, outLen, tokens, inter, threads;
  if (argc != 5 || !float32Arg(env, argv[0], &gu, &guLen) || !sizeArg(env, argv[1], &tokens) ||
      !sizeArg(env, argv[2], &inter) || !float32Arg(env, argv[3], &out, &outLen) || !sizeArg(env, argv[4], &threads))
    return fail(env, "siluGate(gu, tokens, inter, out, threads)");
  if (guLen != 2 * tokens * inter || outLen != tokens * inter) return fail(env, "siluGate: shape mismatch");
  SiluGate sg = {gu, out, inter};
  parallelFor(tokens, 1, threadCount(threads), siluGateRows, &sg);
  return NULL;
}

// ---- Reading a matrix -------------------------------------------------------------------------
// A BF16 tensor widened to float32 and its NaN/Inf counted in one pass over the threads (the
// JavaScript loops were a second of a 2-layer 7B run's one-thread time): bf16 is float32's top
// half, so the values are exactly toFloat32's.

typedef struct {
  const uint16_t *src; // NULL: count only, in dst
  float *dst;
  size_t counts[MAX_THREADS];
} Widen;

static void widenPart(void *ctx, size_t first, size_t last, size_t part) {
  Widen *w = ctx;
  uint32_t *out = (uint32_t *)w->dst;
  size_t bad = 0;
  for (size_t i = first; i < last; i++) {
    const uint32_t v = w->src ? (uint32_t)w->src[i] << 16 : out[i];
    if (w->src) out[i] = v;
    bad += (v & 0x7f800000u) == 0x7f800000u;
  }
  w->counts[part] = bad;
}

/** widen(src: Uint16Array | null, dst: Float32Array, threads) → NaN/Inf count of dst (with src:
 *  after dst[i] = bf16 src[i] widened). */
static napi_value WidenFn(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Widen w = {NULL, NULL, {0}};
  size_t n, srcLen = 0, threads;
  napi_valuetype t;
  CHECK(napi_typeof(env, argv[0], &t));
  const int hasSrc = t != napi_null;
  if (argc != 3 || (hasSrc && !typedArg(env, argv[0], napi_uint16_array, (void **)&w.src, &srcLen)) ||
      !float32Arg(env, argv[1], &w.dst, &n) || !sizeArg(env, argv[2], &threads) || (hasSrc && srcLen != n))
    return fail(env, "widen(src: Uint16Array | null, dst: Float32Array of its length, threads)");
  const size_t parts = parallelFor(n, 1 << 16, threadCount(threads), widenPart, &w);
  double bad = 0;
  for (size_t i = 0; i < parts; i++) bad += (double)w.counts[i];
  napi_value out;
  CHECK(napi_create_double(env, bad, &out));
  return out;
}

// ---- Fresh memory ---------------------------------------------------------------------------
// A page's first write costs a fault (10–15 µs in the sandboxed VMs measured: 3 ms a MB), which
// made a run's first matrix 1.3–1.7× a warm one. populate(view) asks the kernel for the pages of
// a typed array's bytes on a libuv thread, MADV_POPULATE_WRITE (Linux ≥ 5.14): the same faults,
// but taken while this thread reads the matrix, and never a change to the bytes — so a JavaScript
// write racing it is harmless. Elsewhere, or on an older kernel, it does nothing.

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#endif

typedef struct {
  napi_async_work work;
  napi_ref keep; // the typed array, alive until the pages are in
  uint8_t *base;
  size_t length;
} Populate;

static void populateRun(napi_env env, void *data) {
  (void)env;
  Populate *p = data;
#if defined(__linux__)
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t start = ((uintptr_t)p->base + page - 1) / page * page;
  const uintptr_t end = ((uintptr_t)p->base + p->length) / page * page;
  if (end > start) (void)madvise((void *)start, end - start, MADV_POPULATE_WRITE);
#else
  (void)p;
#endif
}

static void populateDone(napi_env env, napi_status status, void *data) {
  (void)status;
  Populate *p = data;
  napi_delete_reference(env, p->keep);
  napi_delete_async_work(env, p->work);
  free(p);
}

static napi_value PopulateFn(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Memory m;
  if (argc != 1 || !memoryArg(env, argv[0], &m)) return fail(env, "populate(bytes: Uint8Array)");
  Populate *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->base = m.base;
  p->length = m.length;
  napi_value name;
  CHECK(napi_create_string_utf8(env, "loftq.populate", NAPI_AUTO_LENGTH, &name));
  if (napi_create_reference(env, argv[0], 1, &p->keep) != napi_ok ||
      napi_create_async_work(env, NULL, name, populateRun, populateDone, p, &p->work) != napi_ok ||
      napi_queue_async_work(env, p->work) != napi_ok) {
    if (p->keep) napi_delete_reference(env, p->keep);
    free(p);
    return fail(env, "populate: could not queue the work");
  }
  return NULL;
}

// ---- Giving memory back ----------------------------------------------------------------------
// A calibrated 7B run alternates two phases in one process: the calibration pass over a layer,
// then that layer's matrix jobs. Each phase keeps its buffers for its next turn (fresh pages cost
// more than the work), so together they held both working sets at once (4.4 GB). discard(view)
// returns a dead buffer's whole pages to the system (MADV_DONTNEED: they read as zeros when next
// touched, at a page fault each) while the buffer itself stays allocated and reusable; trimCache()
// frees the buffer cache above and malloc's free pages. The engine calls them only where the two
// working sets would not fit its memory budget together.

static napi_value DiscardFn(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Memory m;
  if (argc != 1 || !memoryArg(env, argv[0], &m)) return fail(env, "discard(bytes: Uint8Array)");
  double released = 0;
#if defined(__linux__)
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t start = ((uintptr_t)m.base + page - 1) / page * page;
  const uintptr_t end = ((uintptr_t)m.base + m.length) / page * page;
  if (end > start && madvise((void *)start, end - start, MADV_DONTNEED) == 0) released = (double)(end - start);
#endif
  napi_value out;
  CHECK(napi_create_double(env, released, &out));
  return out;
}

static napi_value TrimCacheFn(napi_env env, napi_callback_info info) {
  (void)info;
  void *taken[CACHE_SLOTS];
  int n = 0;
  double bytes = 0;
  pthread_mutex_lock(&cacheLock);
  for (int i = 0; i < CACHE_SLOTS; i++)
    if (cache[i].p) {
      taken[n++] = cache[i].p;
      bytes += (double)cache[i].bytes;
      cache[i].p = NULL;
    }
  pthread_mutex_unlock(&cacheLock);
  for (int i = 0; i < n; i++) free(taken[i]);
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  napi_value out;
  CHECK(napi_create_double(env, bytes, &out));
  return out;
}

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
      {"isa", NULL, Isa_, NULL, NULL, NULL, napi_enumerable, NULL},
      {"supports", NULL, Supports, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hold", NULL, Hold, NULL, NULL, NULL, napi_enumerable, NULL},
      {"holdView", NULL, HoldView, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gramUpper", NULL, GramUpper, NULL, NULL, NULL, napi_enumerable, NULL},
      {"attention", NULL, AttentionFn, NULL, NULL, NULL, napi_enumerable, NULL},
      {"siluGate", NULL, SiluGateFn, NULL, NULL, NULL, napi_enumerable, NULL},
      {"times", NULL, Times, NULL, NULL, NULL, napi_enumerable, NULL},
      {"timesTransposed", NULL, TimesTransposed, NULL, NULL, NULL, napi_enumerable, NULL},
      {"release", NULL, Release, NULL, NULL, NULL, napi_enumerable, NULL},
      {"quantizeAbsMaxResidual", NULL, QuantizeAbsMaxResidual, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lowRankStep", NULL, LowRankStep, NULL, NULL, NULL, napi_enumerable, NULL},
      {"transposeBand", NULL, TransposeBand, NULL, NULL, NULL, napi_enumerable, NULL},
      {"dotBlock", NULL, DotBlock, NULL, NULL, NULL, napi_enumerable, NULL},
      {"axpyBlock", NULL, AxpyBlock, NULL, NULL, NULL, napi_enumerable, NULL},
      {"orthonormalize", NULL, Orthonormalize, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gram", NULL, Gram, NULL, NULL, NULL, napi_enumerable, NULL},
      {"symmetricEigen", NULL, SymmetricEigen, NULL, NULL, NULL, napi_enumerable, NULL},
      {"holdTriangleBand", NULL, HoldTriangleBand, NULL, NULL, NULL, napi_enumerable, NULL},
      {"holdStrictLowerBandBf16", NULL, HoldStrictLowerBandBf16, NULL, NULL, NULL, napi_enumerable, NULL},
      {"bf16", NULL, Bf16, NULL, NULL, NULL, napi_enumerable, NULL},
      {"measureBf16", NULL, MeasureBf16, NULL, NULL, NULL, napi_enumerable, NULL},
      {"symmetrizeScaled", NULL, SymmetrizeScaled, NULL, NULL, NULL, napi_enumerable, NULL},
      {"populate", NULL, PopulateFn, NULL, NULL, NULL, napi_enumerable, NULL},
      {"discard", NULL, DiscardFn, NULL, NULL, NULL, napi_enumerable, NULL},
      {"trimCache", NULL, TrimCacheFn, NULL, NULL, NULL, napi_enumerable, NULL},
      {"widen", NULL, WidenFn, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
