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

// ---- Node-API ----------------------------------------------------------------------------

typedef struct {
  float *data;
  size_t rows, cols, capacity;
} Held;

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
  Held *h = data;
  if (h->data) napi_adjust_external_memory(env, -(int64_t)(h->rows * h->cols * sizeof(float)), NULL);
  giveBuffer(h->data, h->capacity);
  free(h);
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
  if (h->data) {
    napi_adjust_external_memory(env, -(int64_t)(h->rows * h->cols * sizeof(float)), NULL);
    giveBuffer(h->data, h->capacity);
    h->data = NULL;
  }
  return NULL;
}

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
      {"isa", NULL, Isa_, NULL, NULL, NULL, napi_enumerable, NULL},
      {"supports", NULL, Supports, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hold", NULL, Hold, NULL, NULL, NULL, napi_enumerable, NULL},
      {"times", NULL, Times, NULL, NULL, NULL, napi_enumerable, NULL},
      {"release", NULL, Release, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
