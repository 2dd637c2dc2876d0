// Bindings for csrc/common: float conversions and the tensor-view probes used by tests.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/registry.h"
#include "bindings/tensor_caster.h"
#include "common/convert.h"
#include "common/threads.h"

namespace py = pybind11;

namespace pangu {
namespace {

void convert_into(const TensorView& src, const TensorView& dst) {
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
  int64_t in_size = dtype_size(src.dtype), out_size = dtype_size(dst.dtype);
  parallel_for(src.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    convert_floats(in + begin * in_size, src.dtype, out + begin * out_size, dst.dtype,
                   static_cast<size_t>(end - begin));
  });
}

// Writes `value` into every element through the view's own strides.
void fill(const TensorView& t, double value) {
  check_cpu(t, "tensor");
  check_writable(t, "tensor");
  check_dtype(t, "tensor", {DType::F32, DType::F16, DType::BF16, DType::F64});
  int64_t n = t.numel();
  for (int64_t linear = 0; linear < n; ++linear) {
    int64_t offset = 0, rest = linear;
    for (int64_t d = t.dim() - 1; d >= 0; --d) {
      offset += (rest % t.size(d)) * t.strides[static_cast<size_t>(d)];
      rest /= t.size(d);
    }
    switch (t.dtype) {
      case DType::F32: t.ptr<float>()[offset] = static_cast<float>(value); break;
      case DType::F64: t.ptr<double>()[offset] = value; break;
      case DType::F16: t.ptr<uint16_t>()[offset] = f32_to_f16(static_cast<float>(value)); break;
      default: t.ptr<uint16_t>()[offset] = f32_to_bf16(static_cast<float>(value)); break;
    }
  }
}

py::dict describe(const TensorView& t) {
  py::dict d;
  d["data_ptr"] = reinterpret_cast<uintptr_t>(t.data);
  d["dtype"] = dtype_name(t.dtype);
  d["shape"] = t.shape;
  d["strides"] = t.strides;
  d["device"] = device_name(t);
  d["readonly"] = t.readonly;
  d["contiguous"] = t.is_contiguous();
  return d;
}

void bind(py::module_& m) {
  py::module_ c = m.def_submodule("common", "Float conversions and tensor interop");
  c.def("convert", &convert_into, py::arg("src"), py::arg("dst"), py::call_guard<py::gil_scoped_release>(),
        "Converts src into dst (float32/float16/bfloat16, same element count, contiguous), RNE.");
  c.def("fill", &fill, py::arg("tensor"), py::arg("value"), py::call_guard<py::gil_scoped_release>());
  c.def("describe", &describe, py::arg("tensor"));
}

}  // namespace
}  // namespace pangu

PANGU_REGISTER_BINDINGS(common, pangu::bind);
