// Bindings for the CPU attention kernels (kernels/cpu/attention.h): declare and convert only.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include "bindings/registry.h"
#include "bindings/tensor_caster.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/attention_args.h"

namespace py = pybind11;

namespace pangu::attention {
namespace {

using MaybeView = std::optional<TensorView>;

void forward_into(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                  const MaybeView& lse, const MaybeView& cu_seqlens_q, const MaybeView& cu_seqlens_k,
                  const MaybeView& kv_lens, bool causal, double scale, int64_t window) {
  Problem p = make_problem(q, k, v, cu_seqlens_q, cu_seqlens_k, kv_lens, {causal, scale, window});
  ForwardOutputs o;
  o.out = out.data;
  o.out_strides = tensor_strides(p, out, "out", q, "q", true);
  if (lse) {
    o.lse = lse->ptr<float>();
    o.lse_strides = lse_strides(p, *lse, "lse", q, true);
  }
  forward(p, o);
}

void backward_into(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                   const TensorView& dout, const TensorView& lse, const TensorView& dq, const TensorView& dk,
                   const TensorView& dv, const MaybeView& cu_seqlens_q, const MaybeView& cu_seqlens_k,
                   const MaybeView& kv_lens, bool causal, double scale, int64_t window) {
  Problem p = make_problem(q, k, v, cu_seqlens_q, cu_seqlens_k, kv_lens, {causal, scale, window});
  BackwardTensors t;
  t.out = out.data;
  t.dout = dout.data;
  t.lse = lse.ptr<float>();
  t.dq = dq.data;
  t.dk = dk.data;
  t.dv = dv.data;
  t.out_strides = tensor_strides(p, out, "out", q, "q", false);
  t.dout_strides = tensor_strides(p, dout, "dout", q, "q", false);
  t.lse_strides = lse_strides(p, lse, "lse", q, false);
  t.dq_strides = tensor_strides(p, dq, "dq", q, "q", true);
  t.dk_strides = tensor_strides(p, dk, "dk", k, "k", true);
  t.dv_strides = tensor_strides(p, dv, "dv", k, "k", true);
  backward(p, t);
}

void bind(py::module_& m) {
  py::module_ a = m.def_submodule("attention", "CPU flash attention kernels");
  a.def("forward", &forward_into, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"),
        py::arg("cu_seqlens_q"), py::arg("cu_seqlens_k"), py::arg("kv_lens"), py::arg("causal"), py::arg("scale"),
        py::arg("window"), py::call_guard<py::gil_scoped_release>(),
        "Writes softmax(scale q k^T + mask) v into out (and the natural-log lse if given).");
  a.def("backward", &backward_into, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("dout"),
        py::arg("lse"), py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("cu_seqlens_q"), py::arg("cu_seqlens_k"),
        py::arg("kv_lens"), py::arg("causal"), py::arg("scale"), py::arg("window"),
        py::call_guard<py::gil_scoped_release>(), "Writes dq, dk, dv by recomputation from the saved lse.");
}

}  // namespace
}  // namespace pangu::attention

PANGU_REGISTER_BINDINGS(attention, pangu::attention::bind);
