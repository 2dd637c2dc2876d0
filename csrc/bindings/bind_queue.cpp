// pangu_core._core.queue: the priority data queue (Python objects) and the native push/pop loop.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <tuple>

#include "bindings/registry.h"
#include "common/errors.h"
#include "queue/native_loop.h"
#include "bindings/object_queue.h"

namespace py = pybind11;
using pangu::queue::ObjectQueue;

namespace {

template <typename T>
py::array_t<T> to_array(const std::vector<T>& values) {
  py::array_t<T> out(static_cast<py::ssize_t>(values.size()));
  std::copy(values.begin(), values.end(), out.mutable_data());
  return out;
}

ObjectQueue* make_queue(py::handle capacity, const std::string& overflow, double age_boost,
                        py::handle max_staleness, py::handle version) {
  pangu::queue::QueueOptions options;
  options.capacity = capacity.is_none() ? pangu::queue::kUnbounded
                                        : pangu::queue::to_count(capacity, "capacity", 1);
  options.overflow = pangu::queue::parse_overflow(overflow, "overflow");
  options.age_boost = age_boost;
  options.max_staleness = max_staleness.is_none() ? -1 : static_cast<int64_t>(
      pangu::queue::to_count(max_staleness, "max_staleness", 0));
  options.version = pangu::queue::to_int64(version, "version");
  return new ObjectQueue(options);
}

py::dict stats_dict(const pangu::queue::QueueStats& s) {
  py::dict d;
  d["put"] = s.put;
  d["got"] = s.got;
  d["evicted"] = s.evicted;
  d["dropped"] = s.dropped;
  d["rejected"] = s.rejected;
  d["size"] = s.size;
  d["capacity"] = s.capacity == pangu::queue::kUnbounded ? py::none() : py::object(py::int_(s.capacity));
  d["version"] = s.version;
  d["producer_wait_s"] = s.producer_wait_s;
  d["consumer_wait_s"] = s.consumer_wait_s;
  d["max_age_at_pop"] = s.max_age_at_pop;
  d["waiting_producers"] = s.waiting_producers;
  d["waiting_consumers"] = s.waiting_consumers;
  d["closed"] = s.closed;
  return d;
}

void bind_queue(py::module_& root) {
  py::module_ m = root.def_submodule("queue", "Priority data queue (see pangu_core.queue)");
  using Release = py::call_guard<py::gil_scoped_release>;

  py::class_<ObjectQueue>(m, "PriorityQueue")
      .def(py::init(&make_queue), py::arg("capacity"), py::arg("overflow"), py::arg("age_boost"),
           py::arg("max_staleness"), py::arg("version"))
      .def("put", &ObjectQueue::put, py::arg("item"), py::arg("priority"), py::arg("version") = py::none(),
           py::arg("timeout") = py::none())
      .def("put_many", &ObjectQueue::put_many, py::arg("items"), py::arg("priorities"),
           py::arg("versions") = py::none(), py::arg("timeout") = py::none())
      .def("get", &ObjectQueue::get, py::arg("timeout") = py::none())
      .def("get_batch", &ObjectQueue::get_batch, py::arg("n"), py::arg("timeout") = py::none(),
           py::arg("min_n") = py::none())
      .def("advance_version", &ObjectQueue::advance_version, py::arg("version"))
      .def("drain", &ObjectQueue::drain)
      .def("close", [](ObjectQueue& q) { q.core().close(); })
      .def("set_age_boost", [](ObjectQueue& q, double alpha) { q.core().set_age_boost(alpha); },
           py::arg("age_boost"))
      .def("update_priorities",
           [](ObjectQueue& q, py::array_t<uint64_t, py::array::c_style> ids,
              py::array_t<double, py::array::c_style> priorities) {
             PANGU_CHECK(ids.ndim() == 1, Value, "ids: expected a 1-D array, got ", ids.ndim(), " dimensions");
             PANGU_CHECK(priorities.ndim() == 1 && priorities.shape(0) == ids.shape(0), Value,
                         "priorities: expected a 1-D array of len(ids)=", ids.shape(0), " values");
             const uint64_t* id_data = ids.data();
             const double* p_data = priorities.data();
             const size_t n = static_cast<size_t>(ids.shape(0));
             py::gil_scoped_release release;
             return q.core().update_priorities(id_data, p_data, n);
           },
           py::arg("ids"), py::arg("priorities"))
      .def("snapshot",
           [](ObjectQueue& q) {
             // The GIL stays held: no queued item can lose its last reference before the snapshot
             // takes one of its own.
             pangu::queue::QueueSnapshot snap = q.core().snapshot();
             py::list items(snap.payloads.size());
             for (size_t i = 0; i < snap.payloads.size(); ++i) {
               items[i] = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(snap.payloads[i]));
             }
             py::dict d;
             d["items"] = items;
             d["ids"] = to_array(snap.ids);
             d["priorities"] = to_array(snap.priorities);
             d["versions"] = to_array(snap.versions);
             d["effective"] = to_array(snap.effective);
             return d;
           })
      .def("stats", [](ObjectQueue& q) { return stats_dict(q.core().stats()); })
      .def("__len__", [](ObjectQueue& q) { return q.core().size(); })
      .def_property_readonly("closed", [](ObjectQueue& q) { return q.core().closed(); })
      .def_property_readonly("version", [](ObjectQueue& q) { return q.core().version(); })
      .def_property_readonly("age_boost", [](ObjectQueue& q) { return q.core().age_boost(); })
      .def_property_readonly("capacity", [](ObjectQueue& q) -> py::object {
        size_t c = q.core().options().capacity;
        return c == pangu::queue::kUnbounded ? py::none() : py::object(py::int_(c));
      })
      .def_property_readonly("overflow", [](ObjectQueue& q) {
        return std::string(pangu::queue::overflow_name(q.core().options().overflow));
      })
      .def_property_readonly("max_staleness", [](ObjectQueue& q) -> py::object {
        int64_t s = q.core().options().max_staleness;
        return s < 0 ? py::none() : py::object(py::int_(s));
      });

  m.def("push_pop_loop",
        [](size_t ops, size_t resident, double age_boost, uint64_t seed) {
          auto t = pangu::queue::push_pop_loop(ops, resident, age_boost, seed);
          return std::make_pair(t.wall_s, t.cpu_s);
        },
        py::arg("ops"), py::arg("resident"), py::arg("age_boost") = 0.0, py::arg("seed") = 0, Release(),
        "(wall seconds, thread CPU seconds) of a C++ loop of `ops` alternating put/get with `resident` "
        "items queued.");
  m.def("native_loop",
        [](size_t ops, size_t resident, double age_boost, uint64_t seed, const std::string& queue) {
          PANGU_CHECK(queue == "ours" || queue == "std", Value,
                      "queue: expected 'ours' or 'std', got '", queue, "'");
          auto t = pangu::queue::push_pop_loop(
              ops, resident, age_boost, seed,
              queue == "std" ? pangu::queue::LoopQueue::StdPriorityQueue : pangu::queue::LoopQueue::Ours);
          return std::make_tuple(t.wall_s, t.cpu_s, t.checksum);
        },
        py::arg("ops"), py::arg("resident"), py::arg("age_boost") = 0.0, py::arg("seed") = 0,
        py::arg("queue") = "ours", Release(),
        "(wall seconds, thread CPU seconds, checksum) of the same C++ loop of `ops` alternating put/get "
        "with `resident` items queued, driving our queue ('ours') or std::priority_queue of (key, "
        "sequence) ('std'). Equal checksums mean the same payloads popped in the same order.");
}

}  // namespace

PANGU_REGISTER_BINDINGS(queue, bind_queue);
