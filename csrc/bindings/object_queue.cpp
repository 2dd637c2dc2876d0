#include "bindings/object_queue.h"

#include <pybind11/numpy.h>

#include <cmath>
#include <string>

#include "common/errors.h"

namespace py = pybind11;

namespace pangu::queue {

namespace {

// Releases the GIL for the length of a blocking wait (see WaitHooks).
class GilRelease final : public WaitHooks {
 public:
  void before_wait() override { state_ = PyEval_SaveThread(); }
  void after_wait() override { PyEval_RestoreThread(state_); }

 private:
  PyThreadState* state_ = nullptr;
};

std::string type_name(py::handle value) { return Py_TYPE(value.ptr())->tp_name; }

double to_double(py::handle value, const char* arg) {
  PyObject* obj = value.ptr();
  if (PyFloat_CheckExact(obj)) return PyFloat_AS_DOUBLE(obj);
  if (PyFloat_Check(obj) || PyLong_Check(obj) || PyIndex_Check(obj) || Py_TYPE(obj)->tp_as_number) {
    double out = PyFloat_AsDouble(obj);
    if (!(out == -1.0 && PyErr_Occurred())) return out;
    PyErr_Clear();
  }
  fail(ErrorKind::Type, arg, ": expected a number, got ", type_name(value));
}

// Items leaving the queue carry the reference the queue held; the list takes it over.
py::list steal_into_list(const std::vector<Payload>& payloads) {
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(payloads.size()));
  if (list == nullptr) {
    for (Payload p : payloads) Py_DECREF(reinterpret_cast<PyObject*>(p));
    throw py::error_already_set();
  }
  for (size_t i = 0; i < payloads.size(); ++i) {
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), reinterpret_cast<PyObject*>(payloads[i]));
  }
  return py::reinterpret_steal<py::list>(list);
}

void release_all(const std::vector<Payload>& payloads, size_t begin = 0) {
  for (size_t i = begin; i < payloads.size(); ++i) Py_DECREF(reinterpret_cast<PyObject*>(payloads[i]));
}

// A 1-D float64 view of `value` with n entries (a number is repeated n times into `storage`).
const double* as_doubles(py::handle value, size_t n, const char* arg, std::vector<double>& storage,
                         py::object& keep) {
  if (PyFloat_Check(value.ptr()) || PyLong_Check(value.ptr())) {
    storage.assign(n, to_double(value, arg));
    return storage.data();
  }
  if (PyList_Check(value.ptr()) || PyTuple_Check(value.ptr())) {
    // Read Python floats directly: a round trip through a numpy array costs more than the queue.
    const size_t m = static_cast<size_t>(PySequence_Fast_GET_SIZE(value.ptr()));
    PANGU_CHECK(m == n, Value, arg, ": expected one value per item (shape (", n, ",)), got shape (", m, ",)");
    PyObject** values = PySequence_Fast_ITEMS(value.ptr());
    storage.resize(n);
    for (size_t i = 0; i < n; ++i) {
      PANGU_CHECK(!PyUnicode_Check(values[i]) && !PyBytes_Check(values[i]), Type, arg,
                  ": expected real numbers, got ", type_name(values[i]), " at index ", i);
      storage[i] = to_double(values[i], arg);
    }
    return storage.data();
  }
  py::array arr = py::array::ensure(value);
  PANGU_CHECK(arr, Type, arg, ": expected a number or a sequence of numbers, got ", type_name(value));
  const char kind = arr.dtype().kind();
  PANGU_CHECK(kind == 'f' || kind == 'i' || kind == 'u', Type, arg,
              ": expected real numbers, got an array of dtype ", std::string(py::str(arr.dtype())));
  PANGU_CHECK(arr.ndim() == 1 && static_cast<size_t>(arr.shape(0)) == n, Value, arg,
              ": expected one value per item (shape (", n, ",)), got shape ",
              std::string(py::str(arr.attr("shape"))));
  auto typed = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(arr);
  PANGU_ASSERT(typed);
  keep = typed;
  return typed.data();
}

const int64_t* as_int64s(py::handle value, size_t n, const char* arg, std::vector<int64_t>& storage,
                         py::object& keep) {
  if (value.is_none()) return nullptr;
  if (PyLong_Check(value.ptr())) {
    storage.assign(n, to_int64(value, arg));
    return storage.data();
  }
  py::array arr = py::array::ensure(value);
  PANGU_CHECK(arr, Type, arg, ": expected None, an int or a sequence of ints, got ", type_name(value));
  const char kind = arr.dtype().kind();
  PANGU_CHECK(kind == 'i' || kind == 'u' || arr.size() == 0, Type, arg,
              ": expected integers, got an array of dtype ", std::string(py::str(arr.dtype())));
  PANGU_CHECK(arr.ndim() == 1 && static_cast<size_t>(arr.shape(0)) == n, Value, arg,
              ": expected one version per item (shape (", n, ",)), got shape ",
              std::string(py::str(arr.attr("shape"))));
  auto typed = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
  PANGU_ASSERT(typed);
  keep = typed;
  return typed.data();
}

}  // namespace

double to_seconds(py::handle timeout, const char* arg) {
  if (timeout.is_none()) return kForever;
  PANGU_CHECK(!PyBool_Check(timeout.ptr()), Type, arg, ": expected None or a number of seconds, got bool");
  double seconds = to_double(timeout, arg);
  PANGU_CHECK(seconds >= 0.0, Value, arg, ": expected None or a number of seconds >= 0, got ", seconds);
  return seconds;
}

int64_t to_int64(py::handle value, const char* arg) {
  PyObject* obj = value.ptr();
  PANGU_CHECK(!PyBool_Check(obj) && (PyLong_Check(obj) || PyIndex_Check(obj)), Type, arg,
              ": expected an int, got ", type_name(value));
  int overflow = 0;
  long long out = 0;
  if (PyLong_Check(obj)) {
    out = PyLong_AsLongLongAndOverflow(obj, &overflow);
  } else {
    py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(obj));
    if (!index) throw py::error_already_set();
    out = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  }
  PANGU_CHECK(overflow == 0 && out != kCurrentVersion, Value, arg,
              ": expected an int in the 64-bit range (above its minimum), got ", std::string(py::str(value)));
  return out;
}

size_t to_count(py::handle value, const char* arg, size_t minimum) {
  int64_t n = to_int64(value, arg);
  PANGU_CHECK(n >= static_cast<int64_t>(minimum), Value, arg, ": expected an int >= ", minimum, ", got ", n);
  return static_cast<size_t>(n);
}

ObjectQueue::ObjectQueue(const QueueOptions& options) : queue_(options) {}

ObjectQueue::~ObjectQueue() { release_all(queue_.drain()); }

py::list ObjectQueue::put(py::handle item, py::handle priority, py::handle version, py::handle timeout) {
  const double p = to_double(priority, "priority");
  const int64_t v = version.is_none() ? kCurrentVersion : to_int64(version, "version");
  const double t = to_seconds(timeout, "timeout");
  std::vector<Payload> handed_back;
  GilRelease hooks;
  Py_INCREF(item.ptr());
  try {
    queue_.put(reinterpret_cast<Payload>(item.ptr()), p, v, t, handed_back, &hooks);
  } catch (...) {
    Py_DECREF(item.ptr());
    throw;
  }
  return steal_into_list(handed_back);
}

py::list ObjectQueue::put_many(py::handle items, py::handle priorities, py::handle versions,
                               py::handle timeout) {
  PANGU_CHECK(PySequence_Check(items.ptr()) && !PyUnicode_Check(items.ptr()) && !PyBytes_Check(items.ptr()),
              Type, "items: expected a sequence of items (list or tuple), got ", type_name(items));
  py::object fast = py::reinterpret_steal<py::object>(PySequence_Fast(items.ptr(), "items"));
  if (!fast) throw py::error_already_set();
  const size_t n = static_cast<size_t>(PySequence_Fast_GET_SIZE(fast.ptr()));
  PyObject** objects = PySequence_Fast_ITEMS(fast.ptr());
  std::vector<double> priority_storage;
  std::vector<int64_t> version_storage;
  py::object keep_priorities, keep_versions;
  const double* p = as_doubles(priorities, n, "priorities", priority_storage, keep_priorities);
  const int64_t* v = as_int64s(versions, n, "versions", version_storage, keep_versions);
  const double t = to_seconds(timeout, "timeout");

  std::vector<Payload> payloads(n);
  for (size_t i = 0; i < n; ++i) {
    Py_INCREF(objects[i]);
    payloads[i] = reinterpret_cast<Payload>(objects[i]);
  }
  std::vector<Payload> handed_back;
  size_t processed = 0;
  GilRelease hooks;
  try {
    queue_.put_many(payloads.data(), p, v, n, t, handed_back, processed, &hooks);
  } catch (...) {
    release_all(payloads, processed);
    release_all(handed_back);
    throw;
  }
  return steal_into_list(handed_back);
}

py::object ObjectQueue::get(py::handle timeout) {
  const double t = to_seconds(timeout, "timeout");
  GilRelease hooks;
  Payload payload = queue_.get(t, &hooks);
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(payload));
}

py::list ObjectQueue::get_batch(py::handle n, py::handle timeout, py::handle min_n) {
  const size_t count = to_count(n, "n", 1);
  const size_t least = min_n.is_none() ? 1 : to_count(min_n, "min_n", 1);
  const double t = to_seconds(timeout, "timeout");
  std::vector<Payload> out;
  GilRelease hooks;
  queue_.get_batch(count, least, t, out, &hooks);
  return steal_into_list(out);
}

py::list ObjectQueue::advance_version(py::handle version) {
  return steal_into_list(queue_.advance_version(to_int64(version, "version")));
}

py::list ObjectQueue::drain() { return steal_into_list(queue_.drain()); }

}  // namespace pangu::queue
