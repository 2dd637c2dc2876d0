// Bulk conversions between float32, float16 and bfloat16, vectorised with runtime ISA dispatch.
// Results are bit-identical on every path (round to nearest even, NaN canonicalised as in dtype.h).
// Thread-safe; the buffer functions are single-threaded per call (callers parallelise over chunks).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"
#include "common/tensor_view.h"

namespace pangu {

// Converts src into dst element by element (same element count, any pair among float32, float16,
// bfloat16, both contiguous CPU tensors, dst writable; overlapping memory is not supported), parallel
// over num_threads(). Checks everything first and throws naming "src" or "dst"; writes nothing then.
// Thread-safe for distinct destinations. O(n).
void convert_tensor(const TensorView& src, const TensorView& dst);

// Reads n elements of `from` (F32, F16 or BF16) and writes them as float32. O(n).
void load_as_f32(const void* src, DType from, float* dst, size_t n);
// Writes n float32 values as `to` (F32, F16 or BF16). O(n).
void store_from_f32(const float* src, void* dst, DType to, size_t n);
// Any pair among F32, F16, BF16; src and dst must not overlap. O(n).
void convert_floats(const void* src, DType from, void* dst, DType to, size_t n);

// Per-ISA entry points (convert_<isa>.cpp). Exposed so tests can pin one path.
struct ConvertKernels {
  void (*f32_to_bf16)(const float*, uint16_t*, size_t);
  void (*bf16_to_f32)(const uint16_t*, float*, size_t);
  void (*f32_to_f16)(const float*, uint16_t*, size_t);
  void (*f16_to_f32)(const uint16_t*, float*, size_t);
};
const ConvertKernels& convert_kernels();  // for active_isa()

namespace scalar {
extern const ConvertKernels kConvert;
}
namespace avx2 {
extern const ConvertKernels kConvert;
}
namespace avx512 {
extern const ConvertKernels kConvert;
}

}  // namespace pangu
