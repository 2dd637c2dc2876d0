#include "common/convert.h"

#include <cstring>

#include "common/cpu_features.h"
#include "common/errors.h"
#include "common/threads.h"

namespace pangu {
namespace scalar {
namespace {
void f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = pangu::f32_to_bf16(src[i]);
}
void bf16_to_f32(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = pangu::bf16_to_f32(src[i]);
}
void f32_to_f16(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = pangu::f32_to_f16(src[i]);
}
void f16_to_f32(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = pangu::f16_to_f32(src[i]);
}
}  // namespace
const ConvertKernels kConvert{f32_to_bf16, bf16_to_f32, f32_to_f16, f16_to_f32};
}  // namespace scalar

const ConvertKernels& convert_kernels() {
#if PANGU_HAVE_X86
  Isa isa = active_isa();
  if (isa >= Isa::Avx512) return avx512::kConvert;
  if (isa >= Isa::Avx2) return avx2::kConvert;
#endif
  return scalar::kConvert;
}

void load_as_f32(const void* src, DType from, float* dst, size_t n) {
  switch (from) {
    case DType::F32: std::memcpy(dst, src, n * sizeof(float)); return;
    case DType::BF16: convert_kernels().bf16_to_f32(static_cast<const uint16_t*>(src), dst, n); return;
    case DType::F16: convert_kernels().f16_to_f32(static_cast<const uint16_t*>(src), dst, n); return;
    default: fail(ErrorKind::Type, "expected float32, float16 or bfloat16, got ", dtype_name(from));
  }
}

void store_from_f32(const float* src, void* dst, DType to, size_t n) {
  switch (to) {
    case DType::F32: std::memcpy(dst, src, n * sizeof(float)); return;
    case DType::BF16: convert_kernels().f32_to_bf16(src, static_cast<uint16_t*>(dst), n); return;
    case DType::F16: convert_kernels().f32_to_f16(src, static_cast<uint16_t*>(dst), n); return;
    default: fail(ErrorKind::Type, "expected float32, float16 or bfloat16, got ", dtype_name(to));
  }
}

void convert_floats(const void* src, DType from, void* dst, DType to, size_t n) {
  if (from == to) {
    std::memcpy(dst, src, n * static_cast<size_t>(dtype_size(from)));
    return;
  }
  if (from == DType::F32) return store_from_f32(static_cast<const float*>(src), dst, to, n);
  if (to == DType::F32) return load_as_f32(src, from, static_cast<float*>(dst), n);
  // Half to half goes through float32 in cache-sized pieces.
  constexpr size_t kChunk = 2048;
  float buffer[kChunk];
  for (size_t done = 0; done < n; done += kChunk) {
    size_t m = n - done < kChunk ? n - done : kChunk;
    load_as_f32(static_cast<const uint16_t*>(src) + done, from, buffer, m);
    store_from_f32(buffer, static_cast<uint16_t*>(dst) + done, to, m);
  }
}

void convert_tensor(const TensorView& src, const TensorView& dst) {
  check_cpu(src, "src");
  check_cpu(dst, "dst");
  check_dtype(src, "src", {DType::F32, DType::F16, DType::BF16});
  check_dtype(dst, "dst", {DType::F32, DType::F16, DType::BF16});
  check_contiguous(src, "src");
  check_contiguous(dst, "dst");
  check_writable(dst, "dst");
  PANGU_CHECK(src.numel() == dst.numel(), Value, "dst: expected ", src.numel(), " elements like src, got ",
              dst.numel());
  const char* in = static_cast<const char*>(src.data);
  char* out = static_cast<char*>(dst.data);
  const int64_t in_size = dtype_size(src.dtype), out_size = dtype_size(dst.dtype);
  // 64K elements per range: below that, waking a helper costs more than the copy it would share.
  parallel_for(src.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    convert_floats(in + begin * in_size, src.dtype, out + begin * out_size, dst.dtype,
                   static_cast<size_t>(end - begin));
  });
}

}  // namespace pangu
