// AVX-512 (F, BW, VL, DQ) conversions; only called when the CPU has them.
#include <immintrin.h>

#include "common/convert.h"

namespace pangu {
namespace avx512 {
namespace {

// The integer rounding path rather than VCVTNEPS2BF16: that instruction treats float32 denormals
// as zero, which would break bit-exactness with torch for inputs below 2^-126.
inline __m256i round_to_bf16(__m512 v) {
  __m512i x = _mm512_castps_si512(v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), lsb), 16);
  __mmask16 is_nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  rounded = _mm512_mask_mov_epi32(rounded, is_nan, _mm512_set1_epi32(0x7fc0));
  return _mm512_cvtepi32_epi16(rounded);
}

void f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), round_to_bf16(_mm512_loadu_ps(src + i)));
  }
  if (i < n) {
    __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm256_mask_storeu_epi16(dst + i, tail, round_to_bf16(_mm512_maskz_loadu_ps(tail, src + i)));
  }
}

void bf16_to_f32(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
  }
  if (i < n) {
    __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1u);
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(tail, src + i));
    _mm512_mask_storeu_ps(dst + i, tail, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
  }
}

inline __m256i round_to_f16(__m512 v) {
  __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // Hardware keeps NaN payloads; torch writes 0x7E00 with the sign. Match it.
  __mmask16 is_nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  __m256i canonical = _mm256_or_si256(_mm256_and_si256(h, _mm256_set1_epi16(static_cast<short>(0x8000))),
                                      _mm256_set1_epi16(0x7e00));
  return _mm256_mask_mov_epi16(h, is_nan, canonical);
}

void f32_to_f16(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), round_to_f16(_mm512_loadu_ps(src + i)));
  }
  if (i < n) {
    __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm256_mask_storeu_epi16(dst + i, tail, round_to_f16(_mm512_maskz_loadu_ps(tail, src + i)));
  }
}

void f16_to_f32(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  }
  if (i < n) {
    __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(dst + i, tail, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail, src + i)));
  }
}

}  // namespace
const ConvertKernels kConvert{f32_to_bf16, bf16_to_f32, f32_to_f16, f16_to_f32};
}  // namespace avx512
}  // namespace pangu
