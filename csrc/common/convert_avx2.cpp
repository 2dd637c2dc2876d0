// AVX2 + F16C conversions. Compiled with -mavx2 -mfma -mf16c; only called when the CPU has them.
#include <immintrin.h>

#include "common/convert.h"

namespace pangu {
namespace avx2 {
namespace {

// Eight floats to eight bfloat16 in the low 16 bits of each 32-bit lane (RNE, NaN -> 0x7FC0).
inline __m256i round_to_bf16_lanes(__m256 v) {
  __m256i x = _mm256_castps_si256(v);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
  __m256 is_nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  return _mm256_castps_si256(
      _mm256_blendv_ps(_mm256_castsi256_ps(rounded), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc0)), is_nan));
}

void f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i lo = round_to_bf16_lanes(_mm256_loadu_ps(src + i));
    __m256i hi = round_to_bf16_lanes(_mm256_loadu_ps(src + i + 8));
    // packus works per 128-bit lane; the permute restores element order.
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xd8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), packed);
  }
  for (; i < n; ++i) dst[i] = pangu::f32_to_bf16(src[i]);
}

void bf16_to_f32(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
  }
  for (; i < n; ++i) dst[i] = pangu::bf16_to_f32(src[i]);
}

inline __m128i canonical_nan_f16(__m256 v, __m128i h) {
  // Hardware keeps NaN payloads; torch writes 0x7E00 with the sign. Match it.
  __m256 is_nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  int mask = _mm256_movemask_ps(is_nan);
  if (mask == 0) return h;
  alignas(16) uint16_t lanes[8];
  _mm_store_si128(reinterpret_cast<__m128i*>(lanes), h);
  for (int j = 0; j < 8; ++j) {
    if (mask & (1 << j)) lanes[j] = static_cast<uint16_t>((lanes[j] & 0x8000u) | 0x7e00u);
  }
  return _mm_load_si128(reinterpret_cast<const __m128i*>(lanes));
}

void f32_to_f16(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(src + i);
    __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), canonical_nan_f16(v, h));
  }
  for (; i < n; ++i) dst[i] = pangu::f32_to_f16(src[i]);
}

void f16_to_f32(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  for (; i < n; ++i) dst[i] = pangu::f16_to_f32(src[i]);
}

}  // namespace
const ConvertKernels kConvert{f32_to_bf16, bf16_to_f32, f32_to_f16, f16_to_f32};
}  // namespace avx2
}  // namespace pangu
