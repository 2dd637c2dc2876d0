// pangu_core._core.testing: hooks for the test suite (common/testing.h), kept out of the modules
// users call. Declarations and conversions only.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/registry.h"
#include "bindings/tensor_caster.h"
#include "common/cpu_features.h"
#include "common/testing.h"
#include "common/work_pool.h"

namespace py = pybind11;

namespace pangu {
namespace {

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
  py::module_ t = m.def_submodule("testing", "Test hooks into the core (not part of the API)");
  using Release = py::call_guard<py::gil_scoped_release>;
  t.def("fill", &testing::fill_strided, py::arg("tensor"), py::arg("value"), Release(),
        "Writes value into every element of tensor through its own strides.");
  t.def("describe", &describe, py::arg("tensor"),
        "The view the core gets of tensor: data_ptr, dtype, shape, strides (elements), device, readonly, "
        "contiguous.");
  t.def("work_pool_counts", &testing::work_pool_counts, py::arg("groups"), py::arg("threads"),
        py::arg("fail_group"), Release(), "Per-group run counts of one work-pool call.");
  t.def("parallel_for_ranges", &testing::parallel_for_ranges, py::arg("n"), py::arg("grain"),
        py::arg("fail_index"), Release(), "The (begin, end) ranges one parallel_for call handed out.");
  t.def("set_threads_backend", [](const std::string& name) { set_threads_backend(name, "name"); },
        py::arg("name"), "Selects the executor of every later parallel call: 'openmp' or 'pool'.");
  t.def("resolve_isa", [](const std::string& name, const std::string& detected) {
    return isa_name(resolve_isa(name, "PANGU_ISA", parse_isa(detected, "detected")));
  }, py::arg("name"), py::arg("detected"), "How PANGU_ISA=name resolves on a CPU whose best level is detected.");
}

}  // namespace
}  // namespace pangu

PANGU_REGISTER_BINDINGS(testing, pangu::bind);
