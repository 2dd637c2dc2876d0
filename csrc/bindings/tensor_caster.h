// pybind11 conversion from torch tensors and numpy arrays to pangu::TensorView, zero-copy.
// Objects with __dlpack__ go through DLPack (torch: all dtypes incl. bfloat16; numpy: writable
// arrays); anything else exporting the buffer protocol (read-only numpy arrays, memoryviews) goes
// through that. Tensors that require grad are detached first (the view never records autograd).
// Wrong-device tensors convert (device fields set) so that check_cpu() can name the argument.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/tensor_view.h"

namespace pangu::dlpack {

// The DLPack ABI (stable since v0.6): the subset the core reads.
struct Device {
  int32_t device_type;
  int32_t device_id;
};
struct DataType {
  uint8_t code;  // 0 int, 1 uint, 2 float, 4 bfloat, 6 bool
  uint8_t bits;
  uint16_t lanes;
};
struct Tensor {
  void* data;
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t* shape;
  int64_t* strides;  // may be null: compact row-major
  uint64_t byte_offset;
};
struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor* self);
};

}  // namespace pangu::dlpack

namespace pangu::bindings {

// Converts `obj` or throws TypeError naming `arg`.
TensorView to_view(pybind11::handle obj, const char* arg);
// True when `obj` exports DLPack or the buffer protocol.
bool is_tensor_like(pybind11::handle obj);

}  // namespace pangu::bindings

namespace pybind11::detail {

template <>
struct type_caster<pangu::TensorView> {
 public:
  PYBIND11_TYPE_CASTER(pangu::TensorView, const_name("Tensor"));

  bool load(handle src, bool) {
    if (!pangu::bindings::is_tensor_like(src)) return false;
    value = pangu::bindings::to_view(src, "tensor");
    return true;
  }

  static handle cast(const pangu::TensorView&, return_value_policy, handle) {
    throw pybind11::type_error("a TensorView cannot be returned to Python");
  }
};

}  // namespace pybind11::detail
