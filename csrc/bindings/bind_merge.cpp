// Bindings for csrc/merge: merge kernels, the mmap safetensors reader and the streaming writer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string_view>

#include "bindings/registry.h"
#include "bindings/tensor_caster.h"
#include "merge/file_hash.h"
#include "merge/merge_kernels.h"
#include "merge/safetensors_reader.h"
#include "merge/safetensors_writer.h"

namespace py = pybind11;

namespace pangu::merge {
namespace {

Sparsify parse_sparsify(const std::string& name) {
  if (name == "none") return Sparsify::None;
  if (name == "magnitude") return Sparsify::Magnitude;
  if (name == "random") return Sparsify::Random;
  fail(ErrorKind::Value, "sparsify: expected 'none', 'magnitude' or 'random', got '", name, "'");
}

int64_t task_vectors(const std::optional<TensorView>& base, const std::vector<TensorView>& models,
                     const TensorView& out, const std::vector<double>& weights, const std::vector<double>& densities,
                     const std::string& sparsify, bool sign_consensus, bool normalize, double lambda, uint64_t seed,
                     uint64_t tensor_id, uint64_t first_index) {
  TaskVectorOptions options;
  options.weights = weights;
  options.densities = densities;
  options.sparsify = parse_sparsify(sparsify);
  options.sign_consensus = sign_consensus;
  options.normalize = normalize;
  options.lambda = lambda;
  options.seed = seed;
  options.tensor_id = tensor_id;
  options.first_index = first_index;
  return merge_task_vectors(base ? &*base : nullptr, models, options, out);
}

py::tuple kth(const std::optional<TensorView>& base, const TensorView& model, int64_t k) {
  MagnitudeThreshold t;
  {
    py::gil_scoped_release release;
    t = kth_magnitude(base ? &*base : nullptr, model, k);
  }
  return py::make_tuple(t.value, t.greater, t.equal);
}

py::array reader_buffer(const SafetensorsReader& reader, int64_t begin, int64_t end, const std::string& name) {
  char* data = reader.range(begin, end, name);
  auto* holder = new std::shared_ptr<void>(reader.keeper());
  py::capsule owner(holder, [](void* p) { delete static_cast<std::shared_ptr<void>*>(p); });
  return py::array(py::dtype("uint8"), {end - begin}, {int64_t{1}}, data, owner);
}

void bind(py::module_& m) {
  py::module_ mm = m.def_submodule("merge", "Checkpoint merge kernels and safetensors streaming");
  mm.def("task_vectors", &task_vectors, py::arg("base"), py::arg("models"), py::arg("out"), py::arg("weights"),
         py::arg("densities"), py::arg("sparsify"), py::arg("sign_consensus"), py::arg("normalize"),
         py::arg("lambda_"), py::arg("seed"), py::arg("tensor_id"), py::arg("first_index") = 0,
         py::call_guard<py::gil_scoped_release>(),
         "Task-vector merge into out; returns the count of non-finite outputs (see merge_kernels.h).");
  mm.def("slerp", &slerp, py::arg("a"), py::arg("b"), py::arg("t"), py::arg("dot_threshold"), py::arg("eps"),
         py::arg("out"), py::call_guard<py::gil_scoped_release>(),
         "Spherical interpolation of two tensors into out; returns the count of non-finite outputs.");
  mm.def("kth_magnitude", &kth, py::arg("base"), py::arg("model"), py::arg("k"),
         "(value, greater, equal): the k-th largest |model - base| and counts above / equal to it.");
  mm.def("file_xxh64", &file_xxh64, py::arg("path"), py::arg("window") = int64_t{8} << 20,
         py::call_guard<py::gil_scoped_release>(),
         "XXH64 (seed 0) of a file as 16 hex digits, read through a memory mapping a window at a time.");
  mm.def("xxh64", [](py::bytes data, uint64_t seed) {
           std::string_view view(data);
           return xxh64(view.data(), view.size(), seed);
         }, py::arg("data"), py::arg("seed") = 0, "XXH64 of a bytes object (for tests of the hash).");
  mm.def("dare_uniform", &dare_uniform, py::arg("seed"), py::arg("tensor_id"), py::arg("model"), py::arg("index"),
         "The counter-based uniform draw DARE uses for one element.");

  py::class_<SafetensorsReader>(mm, "SafetensorsReader")
      .def(py::init<const std::string&>(), py::arg("path"))
      .def_property_readonly("path", &SafetensorsReader::path)
      .def_property_readonly("file_size", &SafetensorsReader::file_size)
      .def_property_readonly("data_start", &SafetensorsReader::data_start)
      .def("header", [](const SafetensorsReader& r) { return py::bytes(r.header()); })
      .def("buffer", &reader_buffer, py::arg("begin"), py::arg("end"), py::arg("name"))
      .def("prefetch", &SafetensorsReader::prefetch, py::arg("begin"), py::arg("end"),
           py::call_guard<py::gil_scoped_release>())
      .def("populate", &SafetensorsReader::populate, py::arg("begin"), py::arg("end"),
           py::call_guard<py::gil_scoped_release>())
      .def("release", &SafetensorsReader::release, py::arg("begin"), py::arg("end"),
           py::call_guard<py::gil_scoped_release>());

  py::class_<SafetensorsWriter>(mm, "SafetensorsWriter")
      .def(py::init<const std::string&, const std::string&, int>(), py::arg("path"), py::arg("header"),
           py::arg("depth"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("data_start", &SafetensorsWriter::data_start)
      .def_property_readonly("bytes_written", &SafetensorsWriter::bytes_written)
      .def("submit", &SafetensorsWriter::submit, py::arg("tensor"), py::arg("offset"),
           py::call_guard<py::gil_scoped_release>())
      .def("close", &SafetensorsWriter::close, py::arg("sync"), py::call_guard<py::gil_scoped_release>());
}

}  // namespace
}  // namespace pangu::merge

PANGU_REGISTER_BINDINGS(merge, pangu::merge::bind);
