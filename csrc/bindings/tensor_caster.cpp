#include "bindings/tensor_caster.h"

#include <Python.h>

namespace py = pybind11;

namespace pangu::bindings {
namespace {

TensorView from_dlpack(py::handle obj, const char* arg) {
  py::object exporter = py::reinterpret_borrow<py::object>(obj);
  py::object requires_grad = py::getattr(exporter, "requires_grad", py::none());
  if (!requires_grad.is_none() && requires_grad.cast<bool>()) exporter = exporter.attr("detach")();
  py::object capsule = exporter.attr("__dlpack__")();
  auto* managed = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  if (managed == nullptr) throw py::error_already_set();
  // Renaming tells the capsule's destructor that the consumer now owns the tensor.
  PyCapsule_SetName(capsule.ptr(), "used_dltensor");
  const dlpack::Tensor& t = managed->dl_tensor;

  TensorView view;
  view.keeper = std::shared_ptr<void>(managed, [](void* p) {
    auto* m = static_cast<dlpack::ManagedTensor*>(p);
    if (m->deleter == nullptr) return;
    if (Py_IsInitialized()) {
      py::gil_scoped_acquire gil;  // numpy's deleter decrements a Python reference
      m->deleter(m);
    }
  });
  view.dtype = dtype_from_dlpack(t.dtype.code, t.dtype.bits, t.dtype.lanes, arg);
  view.device_type = t.device.device_type;
  view.device_id = t.device.device_id;
  view.data = static_cast<char*>(t.data) + t.byte_offset;
  view.shape.assign(t.shape, t.shape + t.ndim);
  view.strides.resize(static_cast<size_t>(t.ndim));
  if (t.strides != nullptr) {
    view.strides.assign(t.strides, t.strides + t.ndim);
  } else {
    int64_t stride = 1;
    for (int32_t d = t.ndim - 1; d >= 0; --d) {
      view.strides[static_cast<size_t>(d)] = stride;
      stride *= t.shape[d];
    }
  }
  return view;
}

TensorView from_buffer(py::handle obj, const char* arg) {
  py::buffer buffer = py::reinterpret_borrow<py::buffer>(obj);
  py::buffer_info info = buffer.request();
  TensorView view;
  view.dtype = dtype_from_buffer_format(info.format, info.itemsize, arg);
  view.data = info.ptr;
  view.readonly = info.readonly;
  view.shape = info.shape;
  view.strides.resize(info.strides.size());
  for (size_t i = 0; i < info.strides.size(); ++i) {
    PANGU_CHECK(info.strides[i] % info.itemsize == 0, Value, arg,
                ": strides must be multiples of the element size");
    view.strides[i] = info.strides[i] / info.itemsize;
  }
  auto* held = new py::buffer_info(std::move(info));
  view.keeper = std::shared_ptr<void>(held, [](void* p) {
    if (Py_IsInitialized()) {
      py::gil_scoped_acquire gil;
      delete static_cast<py::buffer_info*>(p);
    }
  });
  return view;
}

}  // namespace

bool is_tensor_like(py::handle obj) {
  return py::hasattr(obj, "__dlpack__") || PyObject_CheckBuffer(obj.ptr());
}

TensorView to_view(py::handle obj, const char* arg) {
  if (py::hasattr(obj, "__dlpack__")) {
    try {
      return from_dlpack(obj, arg);
    } catch (py::error_already_set& e) {
      // numpy refuses to export read-only arrays through DLPack; the buffer protocol can.
      if (!e.matches(PyExc_BufferError) || !PyObject_CheckBuffer(obj.ptr())) throw;
    }
  }
  PANGU_CHECK(PyObject_CheckBuffer(obj.ptr()), Type, arg, ": expected a torch tensor or numpy array, got ",
              std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  return from_buffer(obj, arg);
}

}  // namespace pangu::bindings
