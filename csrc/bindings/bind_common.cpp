// Bindings for csrc/common: float conversions.
#include <pybind11/pybind11.h>

#include "bindings/registry.h"
#include "bindings/tensor_caster.h"
#include "common/convert.h"

namespace py = pybind11;

namespace pangu {
namespace {

void bind(py::module_& m) {
  py::module_ c = m.def_submodule("common", "Float conversions and tensor interop");
  c.def("convert", &convert_tensor, py::arg("src"), py::arg("dst"), py::call_guard<py::gil_scoped_release>(),
        "Converts src into dst (float32/float16/bfloat16, same element count, contiguous), RNE.");
}

}  // namespace
}  // namespace pangu

PANGU_REGISTER_BINDINGS(common, pangu::bind);
