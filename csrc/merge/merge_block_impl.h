// Block routines of the merge kernels, written once as plain loops and compiled once per ISA file
// (merge_kernels.cpp, merge_kernels_avx2.cpp, merge_kernels_avx512.cpp) so the compiler vectorises
// them at that width. Only float adds/multiplies in a fixed
// order per element, so every path gives the same bits (no FMA contraction: see the pragma below).
#pragma once

#include <cmath>
#include <cstdint>

// GCC contracts a * b + c into one FMA where the target has it, even in ISO C++ mode, and that
// rounds differently from the baseline path: every path here rounds each product on its own.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

// Anonymous namespace: each ISA file gets its own copy (no ODR merge across different flags).
namespace pangu::merge {
namespace {
namespace block_impl {

constexpr int64_t kBlockMax = 4096;  // = kBlock in merge_kernels.h; combine's scratch lives on the stack

// Counts NaN and infinite entries from the exponent bits: integer compares vectorise everywhere.
inline int64_t count_nonfinite(const float* __restrict x, int64_t len) {
  int32_t bad = 0;  // len <= kBlockMax
  for (int64_t j = 0; j < len; ++j) {
    uint32_t bits;
    __builtin_memcpy(&bits, &x[j], 4);
    bad += (bits & 0x7f800000u) == 0x7f800000u;
  }
  return bad;
}

inline void subtract(const float* model, const float* base, int64_t len, float* delta) {
  if (base == nullptr) {
    for (int64_t j = 0; j < len; ++j) delta[j] = model[j];
    return;
  }
  for (int64_t j = 0; j < len; ++j) delta[j] = model[j] - base[j];
}

inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// DARE: keeps d[j] / density where the element's draw u < density, else 0. The draw is 24 bits of
// mix64(key ^ index), converted exactly (it fits in an int32).
inline void drop(float* d, int64_t len, uint64_t key, uint64_t first_index, float density) {
  for (int64_t j = 0; j < len; ++j) {
    uint64_t h = mix64(key ^ (first_index + static_cast<uint64_t>(j)));
    float u = static_cast<float>(static_cast<int32_t>(h >> 40)) * (1.0f / 16777216.0f);
    d[j] = u < density ? d[j] / density : 0.0f;
  }
}

// TIES trim: zeroes entries whose |d| bit pattern is below `threshold` (or equal, unless keep_equal).
inline void trim(float* d, int64_t len, uint32_t threshold, bool keep_equal) {
  uint32_t limit = keep_equal ? threshold : threshold + 1;
  for (int64_t j = 0; j < len; ++j) {
    uint32_t bits;
    __builtin_memcpy(&bits, &d[j], 4);
    d[j] = (bits & 0x7fffffffu) >= limit ? d[j] : 0.0f;
  }
}

inline int64_t blend(const float* a, const float* b, float ca, float cb, int64_t len, float* out) {
  for (int64_t j = 0; j < len; ++j) out[j] = ca * a[j] + cb * b[j];
  return count_nonfinite(out, len);
}

// sum_i w_i * d_i (added in index order from 0.0f), times scale, plus base: one pass over the block
// for a fixed model count, whose inner loop unrolls away.
template <int M, bool kBase>
inline void mix_fixed(const float* base, float* const* deltas, const double* weights, int64_t len, float scale,
                      float* __restrict out) {
  const float* __restrict d0 = deltas[0];
  const float* __restrict d1 = deltas[M > 1 ? 1 : 0];
  const float* __restrict d2 = deltas[M > 2 ? 2 : 0];
  const float* __restrict d3 = deltas[M > 3 ? 3 : 0];
  const float* __restrict b = base;
  float w0 = static_cast<float>(weights[0]);
  float w1 = static_cast<float>(weights[M > 1 ? 1 : 0]);
  float w2 = static_cast<float>(weights[M > 2 ? 2 : 0]);
  float w3 = static_cast<float>(weights[M > 3 ? 3 : 0]);
  for (int64_t j = 0; j < len; ++j) {
    float m = 0.0f;
    m += w0 * d0[j];
    if (M > 1) m += w1 * d1[j];
    if (M > 2) m += w2 * d2[j];
    if (M > 3) m += w3 * d3[j];
    out[j] = kBase ? b[j] + m * scale : m * scale;
  }
}

template <bool kBase>
inline bool mix_small(const float* base, float* const* deltas, const double* weights, int models, int64_t len,
                      float scale, float* out) {
  switch (models) {
    case 1: mix_fixed<1, kBase>(base, deltas, weights, len, scale, out); return true;
    case 2: mix_fixed<2, kBase>(base, deltas, weights, len, scale, out); return true;
    case 3: mix_fixed<3, kBase>(base, deltas, weights, len, scale, out); return true;
    case 4: mix_fixed<4, kBase>(base, deltas, weights, len, scale, out); return true;
    default: return false;
  }
}

// Fused elementwise mix for the common case (linear / task arithmetic, no sparsify, no sign
// election): reads float32 or bfloat16 straight from the inputs, and rounds straight into a float32
// or bfloat16 output, one pass, no scratch. Per element it computes exactly what subtract + mix_fixed
// + count_nonfinite + store_from_f32 compute (same operations in the same order), so the bits agree
// with the block path; bfloat16 widening and rounding are integer ops, which vectorise everywhere.
inline float widen(float x) { return x; }
inline float widen(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}
inline void narrow(float v, float* out) { *out = v; }
inline void narrow(float v, uint16_t* out) {
  uint32_t x;
  __builtin_memcpy(&x, &v, 4);
  uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  *out = static_cast<uint16_t>((x & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : rounded);  // NaN: canonical
}

template <int M, bool kBase, typename In, typename Out>
inline int64_t fused_fixed(const In* base, const In* const* models, const float* w, float scale, int64_t len,
                           Out* __restrict out) {
  const In* __restrict m0 = models[0];
  const In* __restrict m1 = models[M > 1 ? 1 : 0];
  const In* __restrict m2 = models[M > 2 ? 2 : 0];
  const In* __restrict m3 = models[M > 3 ? 3 : 0];
  const In* __restrict b = kBase ? base : models[0];
  float w0 = w[0], w1 = w[M > 1 ? 1 : 0], w2 = w[M > 2 ? 2 : 0], w3 = w[M > 3 ? 3 : 0];
  int32_t bad = 0;  // len <= kBlockMax
  for (int64_t j = 0; j < len; ++j) {
    float bj = kBase ? widen(b[j]) : 0.0f;
    float m = 0.0f;
    m += w0 * (kBase ? widen(m0[j]) - bj : widen(m0[j]));
    if (M > 1) m += w1 * (kBase ? widen(m1[j]) - bj : widen(m1[j]));
    if (M > 2) m += w2 * (kBase ? widen(m2[j]) - bj : widen(m2[j]));
    if (M > 3) m += w3 * (kBase ? widen(m3[j]) - bj : widen(m3[j]));
    float v = kBase ? bj + m * scale : m * scale;
    uint32_t bits;
    __builtin_memcpy(&bits, &v, 4);
    bad += (bits & 0x7f800000u) == 0x7f800000u;
    narrow(v, &out[j]);
  }
  return bad;
}

template <bool kBase, typename In, typename Out>
inline int64_t fused_models(const void* base, const void* const* models, int count, const float* w, float scale,
                            int64_t len, void* out) {
  const In* b = static_cast<const In*>(base);
  const In* const* m = reinterpret_cast<const In* const*>(models);
  Out* o = static_cast<Out*>(out);
  switch (count) {
    case 1: return fused_fixed<1, kBase>(b, m, w, scale, len, o);
    case 2: return fused_fixed<2, kBase>(b, m, w, scale, len, o);
    case 3: return fused_fixed<3, kBase>(b, m, w, scale, len, o);
    default: return fused_fixed<4, kBase>(b, m, w, scale, len, o);
  }
}

// base: null or the same element type as the models; models: 1 to 4 pointers, already offset to
// the block; in_bf16 / out_bf16 pick bfloat16 over float32. Returns the non-finite count.
inline int64_t fused_mix(const void* base, const void* const* models, int count, bool in_bf16, bool out_bf16,
                         const float* weights, float scale, int64_t len, void* out) {
  if (in_bf16) {
    if (out_bf16) {
      return base ? fused_models<true, uint16_t, uint16_t>(base, models, count, weights, scale, len, out)
                  : fused_models<false, uint16_t, uint16_t>(base, models, count, weights, scale, len, out);
    }
    return base ? fused_models<true, uint16_t, float>(base, models, count, weights, scale, len, out)
                : fused_models<false, uint16_t, float>(base, models, count, weights, scale, len, out);
  }
  if (out_bf16) {
    return base ? fused_models<true, float, uint16_t>(base, models, count, weights, scale, len, out)
                : fused_models<false, float, uint16_t>(base, models, count, weights, scale, len, out);
  }
  return base ? fused_models<true, float, float>(base, models, count, weights, scale, len, out)
              : fused_models<false, float, float>(base, models, count, weights, scale, len, out);
}

// Every loop runs over the whole block with one model or one stream at a time (restrict pointers,
// no inner loop over models), so each is straight vector code; per element the models are still
// added in index order from 0.0f, and v_i = w_i * d_i is rounded before it is added (no FMA).
inline int64_t combine(const float* base, float* const* deltas, const double* weights, int models, int64_t len,
                       bool sign_consensus, bool normalize, float lambda, float* out_block) {
  float* __restrict out = out_block;
  if (!sign_consensus) {
    float divisor = 0.0f;
    for (int i = 0; i < models; ++i) divisor += static_cast<float>(weights[i]);
    float scale = lambda;
    if (normalize) scale = std::fabs(divisor) < 1e-8f ? lambda : lambda / divisor;
    bool done = base != nullptr ? mix_small<true>(base, deltas, weights, models, len, scale, out)
                                : mix_small<false>(base, deltas, weights, models, len, scale, out);
    if (done) return count_nonfinite(out, len);
    for (int64_t j = 0; j < len; ++j) out[j] = 0.0f;
    for (int i = 0; i < models; ++i) {
      const float* __restrict d = deltas[i];
      float w = static_cast<float>(weights[i]);
      for (int64_t j = 0; j < len; ++j) out[j] += w * d[j];
    }
    if (base != nullptr) {
      const float* __restrict b = base;
      for (int64_t j = 0; j < len; ++j) out[j] = b[j] + out[j] * scale;
    } else {
      for (int64_t j = 0; j < len; ++j) out[j] = out[j] * scale;
    }
    return count_nonfinite(out, len);
  }
  // Weighted deltas in place (v_i = w_i * d_i) and their sum, whose sign is the elected one.
  alignas(64) float total[kBlockMax], divisor[kBlockMax];
  float* __restrict sum = total;
  float* __restrict div = divisor;
  for (int64_t j = 0; j < len; ++j) sum[j] = 0.0f, out[j] = 0.0f, div[j] = 0.0f;
  for (int i = 0; i < models; ++i) {
    float* __restrict v = deltas[i];
    float w = static_cast<float>(weights[i]);
    for (int64_t j = 0; j < len; ++j) {
      float x = w * v[j];
      v[j] = x;
      sum[j] += x;
    }
  }
  for (int64_t j = 0; j < len; ++j) sum[j] = sum[j] >= 0.0f ? 1.0f : -1.0f;
  for (int i = 0; i < models; ++i) {
    const float* __restrict v = deltas[i];
    float w = static_cast<float>(weights[i]);
    for (int64_t j = 0; j < len; ++j) {
      // v * sign is exactly +-v, so its sign says whether v agrees (zero never does). Selects, not
      // branches: half of them would be mispredicted.
      float agree = v[j] * sum[j] > 0.0f ? 1.0f : 0.0f;
      out[j] += agree * v[j];
      div[j] += agree * w;
    }
  }
  if (normalize) {
    for (int64_t j = 0; j < len; ++j) out[j] = std::fabs(div[j]) < 1e-8f ? out[j] : out[j] / div[j];
  }
  if (base != nullptr) {
    const float* __restrict b = base;
    for (int64_t j = 0; j < len; ++j) out[j] = b[j] + out[j] * lambda;
  } else {
    for (int64_t j = 0; j < len; ++j) out[j] = out[j] * lambda;
  }
  return count_nonfinite(out, len);
}

}  // namespace block_impl
}  // namespace
}  // namespace pangu::merge
