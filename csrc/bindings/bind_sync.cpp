// Bindings for csrc/sync: the SSP clock, flat layouts, the versioned weight store and shared-memory
// housekeeping. Declarations and conversions only; every call that copies or waits drops the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "bindings/registry.h"
#include "bindings/tensor_caster.h"
#include "common/dtype.h"
#include "sync/flat_layout.h"
#include "sync/shm_segment.h"
#include "sync/ssp_clock.h"
#include "sync/weight_store.h"

namespace py = pybind11;

namespace pangu {
namespace {

using Release = py::call_guard<py::gil_scoped_release>;

uint8_t* byte_buffer(const TensorView& t, int64_t bytes, const char* arg, bool writable) {
  check_cpu(t, arg);
  check_contiguous(t, arg);
  if (writable) check_writable(t, arg);
  PANGU_CHECK(t.nbytes() >= bytes, Value, arg, ": expected at least ", bytes, " bytes, got ", t.nbytes());
  return static_cast<uint8_t*>(t.data);
}

FlatLayout make_layout(std::vector<std::string> names, const std::vector<std::string>& dtypes,
                       std::vector<int64_t> numels, int64_t bucket_bytes) {
  std::vector<DType> parsed;
  for (size_t i = 0; i < dtypes.size(); ++i) {
    std::string arg = "dtypes[" + std::to_string(i) + "]" + (i < names.size() ? " (" + names[i] + ")" : "");
    parsed.push_back(parse_dtype(dtypes[i], arg.c_str()));
  }
  return FlatLayout(std::move(names), std::move(parsed), std::move(numels), bucket_bytes);
}

void bind(py::module_& m) {
  py::module_ s = m.def_submodule("sync", "Staleness-bounded weight sync: SSP clock, versioned weight store, shm");

  s.def("required_version", &required_version, py::arg("clock"), py::arg("staleness"),
        "Oldest version a reader at `clock` may use: clock - staleness - 1.");

  py::class_<SSPClock, std::shared_ptr<SSPClock>>(s, "SSPClock")
      .def(py::init<int64_t, double>(), py::arg("staleness"), py::arg("heartbeat_timeout_s"))
      .def_property_readonly("staleness", &SSPClock::staleness)
      .def("join", &SSPClock::join, py::arg("id"))
      .def("leave", &SSPClock::leave, py::arg("id"))
      .def("declare_dead", &SSPClock::declare_dead, py::arg("id"))
      .def("heartbeat", &SSPClock::heartbeat, py::arg("id"))
      .def("reap", &SSPClock::reap)
      .def("tick", &SSPClock::tick, py::arg("id"), py::arg("timeout_s"), Release())
      .def("wait_turn", &SSPClock::wait_turn, py::arg("id"), py::arg("timeout_s"), Release())
      .def("wait_version", &SSPClock::wait_version, py::arg("id"), py::arg("timeout_s"), Release())
      .def("publish", &SSPClock::publish, py::arg("version"))
      .def_property_readonly("version", &SSPClock::version)
      .def("clock", &SSPClock::clock, py::arg("id"))
      .def("min_clock", &SSPClock::min_clock)
      .def("live_workers", &SSPClock::live_workers)
      .def("dead_workers", &SSPClock::dead_workers)
      .def("close", &SSPClock::close)
      .def_property_readonly("closed", &SSPClock::closed);

  py::class_<FlatLayout, std::shared_ptr<FlatLayout>>(s, "FlatLayout")
      .def(py::init(&make_layout), py::arg("names"), py::arg("dtypes"), py::arg("numels"), py::arg("bucket_bytes"))
      .def_property_readonly("total_bytes", &FlatLayout::total_bytes)
      .def_property_readonly("num_buckets", &FlatLayout::num_buckets)
      .def_property_readonly("bucket_limit", &FlatLayout::bucket_limit)
      .def("bucket_offset", &FlatLayout::bucket_offset, py::arg("bucket"))
      .def("bucket_bytes", &FlatLayout::bucket_bytes, py::arg("bucket"))
      .def("entries", [](const FlatLayout& l) {
        py::list out;
        for (const auto& e : l.entries())
          out.append(py::make_tuple(e.name, dtype_name(e.dtype), e.numel, e.offset, e.nbytes, e.bucket));
        return out;
      });

  s.def(
      "flatten",
      [](const FlatLayout& layout, const std::vector<TensorView>& tensors, const TensorView& out,
         const std::vector<int64_t>& buckets) {
        flatten(layout, tensors, byte_buffer(out, layout.total_bytes(), "out", true), buckets);
      },
      py::arg("layout"), py::arg("tensors"), py::arg("out"), py::arg("buckets") = std::vector<int64_t>{}, Release());
  s.def(
      "unflatten",
      [](const FlatLayout& layout, const TensorView& flat, const std::vector<TensorView>& tensors,
         const std::vector<int64_t>& buckets) {
        unflatten(layout, byte_buffer(flat, layout.total_bytes(), "flat", false), tensors, buckets);
      },
      py::arg("layout"), py::arg("flat"), py::arg("tensors"), py::arg("buckets") = std::vector<int64_t>{}, Release());
  s.def(
      "changed_buckets",
      [](const FlatLayout& layout, const TensorView& a, const TensorView& b) {
        return changed_buckets(layout, byte_buffer(a, layout.total_bytes(), "a", false),
                               byte_buffer(b, layout.total_bytes(), "b", false));
      },
      py::arg("layout"), py::arg("a"), py::arg("b"), Release());

  py::class_<WeightStore, std::shared_ptr<WeightStore>>(s, "WeightStore")
      .def_static("create_heap", &WeightStore::create_heap, py::arg("layout"), py::arg("slots"),
                  py::arg("layout_text"), py::arg("max_leases") = 256)
      .def_static("create_shared", &WeightStore::create_shared, py::arg("name"), py::arg("layout"), py::arg("slots"),
                  py::arg("layout_text"), py::arg("max_leases") = 256, Release())
      .def_static("open_shared", &WeightStore::open_shared, py::arg("name"), Release())
      .def("publish", &WeightStore::publish, py::arg("tensors"), py::arg("version"), py::arg("timeout_s"), Release())
      .def(
          "pull",
          [](WeightStore& w, const std::vector<TensorView>& tensors, int64_t version, int64_t min_version,
             double timeout_s, std::optional<TensorView> flat_out) {
            uint8_t* flat = flat_out ? byte_buffer(*flat_out, w.layout().total_bytes(), "flat_out", true) : nullptr;
            return w.pull(tensors, version, min_version, timeout_s, flat);
          },
          py::arg("tensors"), py::arg("version"), py::arg("min_version"), py::arg("timeout_s"),
          py::arg("flat_out") = std::nullopt, Release())
      .def(
          "pin",
          [](WeightStore& w, int64_t version, double timeout_s) {
            WeightStore::Pin p = w.pin(version, timeout_s);
            return std::make_pair(p.lease, p.version);
          },
          py::arg("version"), py::arg("timeout_s"), Release())
      .def("unpin", &WeightStore::unpin, py::arg("lease"))
      .def("wait_version", &WeightStore::wait_version, py::arg("min_version"), py::arg("timeout_s"), Release())
      .def("latest_version", &WeightStore::latest_version)
      .def("versions", &WeightStore::versions)
      .def_property_readonly("layout", [](const WeightStore& w) { return std::make_shared<FlatLayout>(w.layout()); })
      .def("pin_count", &WeightStore::pin_count, py::arg("version"))
      .def_property_readonly("slots", &WeightStore::slots)
      .def_property_readonly("slot_bytes", &WeightStore::slot_bytes)
      .def_property_readonly("layout_text", &WeightStore::layout_text)
      .def_property_readonly("is_owner", &WeightStore::is_owner)
      .def_property_readonly("name", &WeightStore::name)
      .def_property_readonly("owner_pid", &WeightStore::owner_pid)
      .def("close", &WeightStore::close);

  s.def("segment_name", &segment_name, py::arg("prefix"), py::arg("tag"));
  s.def("parse_segment_name", [](const std::string& name) -> py::object {
    SegmentNameParts p = parse_segment_name(name);
    if (!p.valid) return py::none();
    return py::make_tuple(p.prefix, p.pid, p.start_time, p.tag);
  }, py::arg("name"));
  s.def("sweep_dead_segments", &sweep_dead_segments, py::arg("prefix"));
  s.def("list_segments", &list_segments, py::arg("prefix"));
  s.def("install_cleanup_handlers", &install_cleanup_handlers);
  s.def("process_alive", &process_alive, py::arg("pid"), py::arg("start_time") = 0);
  s.def("process_start_time", &process_start_time, py::arg("pid"));
}

}  // namespace
}  // namespace pangu

PANGU_REGISTER_BINDINGS(sync, pangu::bind);
