// A non-owning view of a CPU tensor or array handed in from Python (torch or numpy, through DLPack
// or the buffer protocol; see bindings/tensor_caster.h). No libtorch: data pointer plus metadata.
// Shapes and strides are in elements. `keeper` holds the exporter's buffer alive while the view
// lives; destroying the last copy may take the GIL.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/errors.h"

namespace pangu {

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  int32_t device_type = 1;  // DLPack numbering: 1 = CPU, 2 = CUDA, others are accelerators
  int32_t device_id = 0;
  bool readonly = false;
  std::shared_ptr<void> keeper;

  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  int64_t size(int64_t d) const { return shape[static_cast<size_t>(d < 0 ? d + dim() : d)]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  int64_t nbytes() const { return numel() * dtype_size(dtype); }
  bool is_contiguous() const {
    int64_t expected = 1;
    for (int64_t d = dim() - 1; d >= 0; --d) {
      size_t i = static_cast<size_t>(d);
      if (shape[i] != 1 && strides[i] != expected) return false;
      expected *= shape[i];
    }
    return true;
  }
  bool is_cpu() const { return device_type == 1 || device_type == 3; }  // CPU or CUDA-host memory
  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
  std::string shape_str() const {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
  }
};

inline std::string device_name(const TensorView& t) {
  switch (t.device_type) {
    case 1: return "cpu";
    case 2: return "cuda:" + std::to_string(t.device_id);
    case 3: return "cuda_host";
    default: return "device type " + std::to_string(t.device_type) + ":" + std::to_string(t.device_id);
  }
}

// Front-door checks. Each throws a typed error naming `arg`, e.g. "k: expected bfloat16, got float32".
inline void check_cpu(const TensorView& t, const char* arg) {
  PANGU_CHECK(t.is_cpu(), Value, arg, ": expected a CPU tensor, got one on ", device_name(t));
}

inline void check_dtype(const TensorView& t, const char* arg, std::initializer_list<DType> allowed) {
  for (DType d : allowed) {
    if (t.dtype == d) return;
  }
  std::string names;
  for (DType d : allowed) names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
  fail(ErrorKind::Type, arg, ": expected ", names, ", got ", dtype_name(t.dtype));
}

inline void check_same_dtype(const TensorView& t, const char* arg, const TensorView& ref, const char* ref_arg) {
  PANGU_CHECK(t.dtype == ref.dtype, Type, arg, ": expected ", dtype_name(ref.dtype), " like ", ref_arg,
              ", got ", dtype_name(t.dtype));
}

inline void check_dim(const TensorView& t, const char* arg, int64_t dims) {
  PANGU_CHECK(t.dim() == dims, Value, arg, ": expected ", dims, " dimensions, got ", t.dim(), " with shape ",
              t.shape_str());
}

inline void check_contiguous(const TensorView& t, const char* arg) {
  PANGU_CHECK(t.is_contiguous(), Value, arg, ": expected a contiguous tensor (call .contiguous()), got shape ",
              t.shape_str(), " with non-dense strides");
}

inline void check_writable(const TensorView& t, const char* arg) {
  PANGU_CHECK(!t.readonly, Value, arg, ": expected a writable array, got a read-only one");
}

inline void check_same_shape(const TensorView& t, const char* arg, const TensorView& ref, const char* ref_arg) {
  PANGU_CHECK(t.shape == ref.shape, Value, arg, ": expected shape ", ref.shape_str(), " like ", ref_arg, ", got ",
              t.shape_str());
}

}  // namespace pangu
