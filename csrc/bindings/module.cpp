// pangu_core._core: exception translation (the one place C++ errors become Python ones), build
// information, and every area's bindings registered through registry.h.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>

#include "bindings/registry.h"
#include "common/cpu_features.h"
#include "common/errors.h"
#include "common/threads.h"

namespace py = pybind11;

namespace {

PyObject* g_queue_full = nullptr;
PyObject* g_queue_closed = nullptr;
PyObject* g_peer_lost = nullptr;

PyObject* python_class(pangu::ErrorKind kind) {
  switch (kind) {
    case pangu::ErrorKind::Value: return PyExc_ValueError;
    case pangu::ErrorKind::Type: return PyExc_TypeError;
    case pangu::ErrorKind::Key: return PyExc_KeyError;
    case pangu::ErrorKind::Index: return PyExc_IndexError;
    case pangu::ErrorKind::Timeout: return PyExc_TimeoutError;
    case pangu::ErrorKind::Runtime: return PyExc_RuntimeError;
    case pangu::ErrorKind::QueueFull: return g_queue_full;
    case pangu::ErrorKind::QueueClosed: return g_queue_closed;
    case pangu::ErrorKind::PeerLost: return g_peer_lost;
  }
  return PyExc_RuntimeError;
}

py::dict build_info() {
  py::dict info;
  info["version"] = PANGU_VERSION;
  info["compiler"] = PANGU_COMPILER;
  info["threads_backend"] = pangu::threads_backend();
  info["openmp"] = pangu::built_with_openmp();
  py::list compiled;
  std::string paths = PANGU_ISA_PATHS;
  size_t start = 0;
  while (start <= paths.size()) {
    size_t comma = paths.find(',', start);
    if (comma == std::string::npos) comma = paths.size();
    compiled.append(paths.substr(start, comma - start));
    start = comma + 1;
  }
  info["isa_compiled"] = compiled;
  info["isa_detected"] = pangu::isa_name(pangu::detected_isa());
  info["isa_selected"] = pangu::isa_name(pangu::active_isa());
  info["threads"] = pangu::num_threads();
#ifdef PANGU_ASCEND_BUILT
  info["ascend"] = true;
#else
  info["ascend"] = false;
#endif
#if defined(__SANITIZE_ADDRESS__)
  info["sanitizer"] = "address";
#elif defined(__SANITIZE_THREAD__)
  info["sanitizer"] = "thread";
#else
  info["sanitizer"] = "";
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pangu_core C++ core (no libtorch; tensors arrive zero-copy through DLPack)";
  // A bad PANGU_ISA fails the import (pybind11 turns the error into ImportError with its message).
  pangu::apply_isa_environment();
  // So does a bad PANGU_THREADS.
  pangu::apply_threads_environment();

  g_queue_full = PyErr_NewExceptionWithDoc("pangu_core._core.QueueFull",
                                           "A put found the queue at capacity (overflow policy 'reject').",
                                           PyExc_Exception, nullptr);
  g_queue_closed = PyErr_NewExceptionWithDoc("pangu_core._core.QueueClosed",
                                             "The queue was closed (and, for a get, drained).",
                                             PyExc_Exception, nullptr);
  g_peer_lost = PyErr_NewExceptionWithDoc("pangu_core._core.PeerLost",
                                          "A shared segment or peer process went away.",
                                          PyExc_RuntimeError, nullptr);
  m.attr("QueueFull") = py::handle(g_queue_full);
  m.attr("QueueClosed") = py::handle(g_queue_closed);
  m.attr("PeerLost") = py::handle(g_peer_lost);

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const pangu::Error& e) {
      PyErr_SetString(python_class(e.kind()), e.what());
    }
  });

  m.def("build_info", &build_info, "Compiler, thread system, ISA paths compiled / detected / selected, threads.");
  m.def("set_num_threads", &pangu::set_num_threads, py::arg("n"));
  m.def("get_num_threads", &pangu::num_threads);
  m.def("set_isa", [](const std::string& name) {
    pangu::set_isa(pangu::resolve_isa(name, "isa", pangu::detected_isa()));
  }, py::arg("isa"));
  m.def("reset_isa", &pangu::reset_isa);
  m.def("available_isas", [] {
    std::vector<std::string> names;
    for (pangu::Isa isa : pangu::available_isas()) names.emplace_back(pangu::isa_name(isa));
    return names;
  });

  auto regs = pangu::bindings::registrations();
  std::sort(regs.begin(), regs.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (const auto& reg : regs) reg.fn(m);
}
