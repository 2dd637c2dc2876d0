// AVX-512 attention path: 16 float lanes, 6 x 64 register tiles for the block products.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "common/convert.h"
#include "kernels/cpu/attention_kernels.h"

namespace pangu::attention::avx512 {

struct V {
  using reg = __m512;
  static constexpr int W = 16, MR = 6, NV = 4;
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg loadn(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store(float* p, reg x) { _mm512_storeu_ps(p, x); }
  static void storen(float* p, reg x, int n) { _mm512_mask_storeu_ps(p, mask(n), x); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static reg zero() { return _mm512_setzero_ps(); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  // 2^x = 2^n * 2^f with n = round(x), |f| <= 1/2, 2^f by a degree-6 minimax polynomial
  // (relative error ~2e-7); scalef turns very negative n (masked logits) into exact zeros.
  static reg exp2(reg x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-160.0f));
    reg n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    reg f = _mm512_sub_ps(x, n);
    reg p = _mm512_set1_ps(1.535336188319500e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
  }
  static float hmax(reg x) { return _mm512_reduce_max_ps(x); }
  static float hsum(reg x) { return _mm512_reduce_add_ps(x); }
  // bfloat16 -> float32 is a 16-bit left shift; inlined so row loads need no dispatch.
  static void widen_bf16(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
      _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
    for (; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
  }
};

#include "kernels/cpu/attention_tiles.inc"
#include "kernels/cpu/attention_passes.inc"

const Kernels kKernels = {&forward_items, &backward_dkdv, &backward_dq, &backward_fused, nullptr};

}  // namespace pangu::attention::avx512
