// Scalar attention path (any CPU) and the per-ISA kernel table lookup.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "common/convert.h"
#include "kernels/cpu/attention_kernels.h"

namespace pangu::attention {
namespace scalar {

struct V {
  using reg = float;
  static constexpr int W = 1, MR = 4, NV = 4;
  static reg load(const float* p) { return *p; }
  static reg loadn(const float* p, int n) { return n > 0 ? *p : 0.0f; }
  static void store(float* p, reg x) { *p = x; }
  static void storen(float* p, reg x, int n) {
    if (n > 0) *p = x;
  }
  static reg set1(float x) { return x; }
  static reg zero() { return 0.0f; }
  static reg fmadd(reg a, reg b, reg c) { return a * b + c; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg add(reg a, reg b) { return a + b; }
  static reg sub(reg a, reg b) { return a - b; }
  static reg max(reg a, reg b) { return a > b ? a : b; }
  static reg exp2(reg x) { return std::exp2(x); }
  static float hmax(reg x) { return x; }
  static float hsum(reg x) { return x; }
  static void widen_bf16(const uint16_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
  }
};

#include "kernels/cpu/attention_tiles.inc"
#include "kernels/cpu/attention_passes.inc"

const Kernels kKernels = {&forward_items, &backward_dkdv, &backward_dq, &backward_fused, nullptr};

}  // namespace scalar

const Kernels& kernels_for(Isa isa) {
#if PANGU_HAVE_X86
  switch (isa) {
    case Isa::Avx512Bf16: return avx512bf16::kKernels;
    case Isa::Avx512: return avx512::kKernels;
    case Isa::Avx2: return avx2::kKernels;
    default: break;
  }
#endif
  return scalar::kKernels;
}

}  // namespace pangu::attention
