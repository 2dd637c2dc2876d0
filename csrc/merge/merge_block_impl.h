// Block routines of the merge kernels, written once as plain loops and compiled once per ISA file
// (merge_kernels.cpp, merge_kernels_avx2.cpp, merge_kernels_avx512.cpp) so the compiler vectorises
// them at that width. Only float adds/multiplies in a fixed
// order per element, so every path gives the same bits (no FMA contraction: see the ISA files).
#pragma once

#include <cmath>
#include <cstdint>

// Anonymous namespace: each ISA file gets its own copy (no ODR merge across different flags).
namespace pangu::merge {
namespace {
namespace block_impl {

constexpr int64_t kBlockMax = 4096;  // = kBlock in merge_kernels.h; combine's scratch lives on the stack

inline int64_t count_nonfinite(const float* x, int64_t len) {
  int64_t bad = 0;
  for (int64_t j = 0; j < len; ++j) bad += !std::isfinite(x[j]);
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

inline int64_t combine(const float* base, float* const* deltas, const double* weights, int models, int64_t len,
                       bool sign_consensus, bool normalize, float lambda, float* out) {
  // Weighted deltas in place: v_i = w_i * d_i.
  for (int i = 0; i < models; ++i) {
    float w = static_cast<float>(weights[i]);
    float* d = deltas[i];
    for (int64_t j = 0; j < len; ++j) d[j] = w * d[j];
  }
  if (!sign_consensus) {
    float divisor = 0.0f;
    for (int i = 0; i < models; ++i) divisor += static_cast<float>(weights[i]);
    float scale = lambda;
    if (normalize) scale = std::fabs(divisor) < 1e-8f ? lambda : lambda / divisor;
    for (int64_t j = 0; j < len; ++j) {
      float mixed = 0.0f;
      for (int i = 0; i < models; ++i) mixed += deltas[i][j];
      out[j] = mixed * scale;
    }
  } else {
    // Model-outer loops over the block so each runs as straight vector code; the per-element sums
    // still add the models in index order, as the reference does.
    float total[kBlockMax], mixed[kBlockMax], divisor[kBlockMax];
    for (int64_t j = 0; j < len; ++j) total[j] = 0.0f, mixed[j] = 0.0f, divisor[j] = 0.0f;
    for (int i = 0; i < models; ++i) {
      const float* v = deltas[i];
      for (int64_t j = 0; j < len; ++j) total[j] += v[j];
    }
    for (int64_t j = 0; j < len; ++j) total[j] = total[j] >= 0.0f ? 1.0f : -1.0f;  // the elected sign
    for (int i = 0; i < models; ++i) {
      const float* __restrict v = deltas[i];
      float w = static_cast<float>(weights[i]);
      for (int64_t j = 0; j < len; ++j) {
        // v * sign is exactly +-v, so its sign says whether v agrees (zero never does). Selects, not
        // branches: half of them would be mispredicted.
        float agree = v[j] * total[j] > 0.0f ? 1.0f : 0.0f;
        mixed[j] += agree * v[j];
        divisor[j] += agree * w;
      }
    }
    for (int64_t j = 0; j < len; ++j) {
      float m = mixed[j];
      if (normalize) m = std::fabs(divisor[j]) < 1e-8f ? m : m / divisor[j];
      out[j] = m * lambda;
    }
  }
  if (base != nullptr) {
    for (int64_t j = 0; j < len; ++j) out[j] = base[j] + out[j];
  }
  return count_nonfinite(out, len);
}

}  // namespace block_impl
}  // namespace
}  // namespace pangu::merge
