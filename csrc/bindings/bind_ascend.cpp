// Bindings for kernels/ascend/host: the flash-attention tiling planner and the CPU simulation of the
// Ascend C kernel's schedule.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "bindings/registry.h"
#include "bindings/tensor_caster.h"
#include "common/dtype.h"
#include "kernels/ascend/host/flash_attention_sim.h"
#include "kernels/ascend/host/flash_attention_tiling.h"

namespace py = pybind11;

namespace pangu {
namespace {

using ascend::AttentionShape;
using ascend::HardwareSpec;
using ascend::Tiling;

HardwareSpec make_spec(int64_t ub, int64_t l1, int64_t l0a, int64_t l0b, int64_t l0c, int64_t cores) {
  HardwareSpec hw;
  hw.ub_bytes = ub;
  hw.l1_bytes = l1;
  hw.l0a_bytes = l0a;
  hw.l0b_bytes = l0b;
  hw.l0c_bytes = l0c;
  hw.num_cores = cores;
  return hw;
}

py::dict to_dict(const AttentionShape& s, const Tiling& t, const HardwareSpec& hw) {
  py::dict ub;
  ub["q_in"] = t.ub.q_in;
  ub["k_in"] = t.ub.k_in;
  ub["v_in"] = t.ub.v_in;
  ub["o_out"] = t.ub.o_out;
  ub["q_f32"] = t.ub.q_f32;
  ub["k_f32"] = t.ub.k_f32;
  ub["v_f32"] = t.ub.v_f32;
  ub["o_acc"] = t.ub.o_acc;
  ub["score_row"] = t.ub.score_row;
  ub["product"] = t.ub.product;
  ub["partial"] = t.ub.partial;
  ub["row_stats"] = t.ub.row_stats;
  ub["reduce_work"] = t.ub.reduce_work;
  ub["total"] = t.ub.total();
  py::dict hwd;
  hwd["ub_bytes"] = hw.ub_bytes;
  hwd["l1_bytes"] = hw.l1_bytes;
  hwd["l0a_bytes"] = hw.l0a_bytes;
  hwd["l0b_bytes"] = hw.l0b_bytes;
  hwd["l0c_bytes"] = hw.l0c_bytes;
  hwd["num_cores"] = hw.num_cores;
  py::list units;
  for (int64_t i = 0; i < t.num_units; ++i) {
    ascend::Unit u = ascend::unit_at(s, t, i);
    units.append(py::make_tuple(u.batch, u.kv_head, u.q_begin, u.q_end, u.kv_len, u.kv_blocks));
  }
  py::dict d;
  d["block_q"] = t.block_q;
  d["block_kv"] = t.block_kv;
  d["group"] = t.group;
  d["rows"] = t.rows;
  d["q_blocks"] = t.q_blocks;
  d["kv_blocks"] = t.kv_blocks;
  d["num_units"] = t.num_units;
  d["used_cores"] = t.used_cores;
  d["chunks"] = t.chunks;
  d["ub"] = ub;
  d["l1_bytes"] = t.l1_bytes;
  d["l0a_bytes"] = t.l0a_bytes;
  d["l0b_bytes"] = t.l0b_bytes;
  d["l0c_bytes"] = t.l0c_bytes;
  d["core_begin"] = t.core_begin;
  d["unit_cost"] = t.unit_cost;
  d["units"] = units;
  d["hardware"] = hwd;
  d["summary"] = ascend::describe(t, hw);
  return d;
}

AttentionShape make_shape(int64_t batch, int64_t heads, int64_t kv_heads, int64_t q_len, int64_t kv_len,
                          int64_t head_dim, bool causal, const std::optional<std::vector<int64_t>>& kv_lens) {
  AttentionShape s;
  s.batch = batch;
  s.heads = heads;
  s.kv_heads = kv_heads;
  s.q_len = q_len;
  s.kv_len = kv_len;
  s.head_dim = head_dim;
  s.causal = causal;
  if (kv_lens) s.kv_lens = *kv_lens;
  return s;
}

py::dict plan(int64_t batch, int64_t heads, int64_t kv_heads, int64_t q_len, int64_t kv_len, int64_t head_dim,
              bool causal, std::optional<std::vector<int64_t>> kv_lens, const std::string& dtype, int64_t ub,
              int64_t l1, int64_t l0a, int64_t l0b, int64_t l0c, int64_t cores) {
  AttentionShape s = make_shape(batch, heads, kv_heads, q_len, kv_len, head_dim, causal, kv_lens);
  s.elem_bytes = dtype_size(parse_dtype(dtype, "dtype"));
  HardwareSpec hw = make_spec(ub, l1, l0a, l0b, l0c, cores);
  Tiling t = ascend::plan_tiling(s, hw);
  return to_dict(s, t, hw);
}

// The kernel's device record for a plan, field by field (core_begin cut to the launched cores).
py::dict kernel_record(int64_t batch, int64_t heads, int64_t kv_heads, int64_t q_len, int64_t kv_len, int64_t head_dim,
                       bool causal, std::optional<std::vector<int64_t>> kv_lens, double scale, int64_t cores) {
  AttentionShape s = make_shape(batch, heads, kv_heads, q_len, kv_len, head_dim, causal, kv_lens);
  HardwareSpec hw;
  hw.num_cores = cores;
  Tiling t = ascend::plan_tiling(s, hw);
  ascend::FlashAttentionTilingData r = ascend::pack_kernel_tiling(s, t, static_cast<float>(scale));
  py::dict d;
  d["batch"] = r.batch;
  d["heads"] = r.heads;
  d["kv_heads"] = r.kv_heads;
  d["q_len"] = r.q_len;
  d["kv_len"] = r.kv_len;
  d["head_dim"] = r.head_dim;
  d["group"] = r.group;
  d["block_q"] = r.block_q;
  d["block_kv"] = r.block_kv;
  d["rows"] = r.rows;
  d["q_blocks"] = r.q_blocks;
  d["chunks"] = r.chunks;
  d["causal"] = r.causal;
  d["has_kv_lens"] = r.has_kv_lens;
  d["num_units"] = r.num_units;
  d["used_cores"] = r.used_cores;
  d["scale"] = r.scale;
  d["core_begin"] = std::vector<int32_t>(r.core_begin, r.core_begin + r.used_cores + 1);
  d["nbytes"] = sizeof(r);
  return d;
}

py::dict simulate(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out, bool causal,
                  double scale, std::optional<std::vector<int64_t>> kv_lens, int64_t ub, int64_t l1, int64_t l0a,
                  int64_t l0b, int64_t l0c, int64_t cores) {
  std::vector<int64_t> lens = kv_lens ? *kv_lens : std::vector<int64_t>{};
  HardwareSpec hw = make_spec(ub, l1, l0a, l0b, l0c, cores);
  Tiling t;
  AttentionShape s;
  {
    py::gil_scoped_release release;
    t = ascend::simulate(q, k, v, out, lens, causal, scale, hw);
    s = ascend::shape_of(q, k, v, lens, causal);
  }
  return to_dict(s, t, hw);
}

void bind(py::module_& m) {
  py::module_ a = m.def_submodule("ascend", "Ascend C flash-attention tiling and its CPU simulation");
  const HardwareSpec def;
  a.def("plan", &plan, py::arg("batch"), py::arg("heads"), py::arg("kv_heads"), py::arg("q_len"), py::arg("kv_len"),
        py::arg("head_dim"), py::arg("causal") = false, py::arg("kv_lens") = py::none(), py::arg("dtype") = "bfloat16",
        py::arg("ub_bytes") = def.ub_bytes, py::arg("l1_bytes") = def.l1_bytes, py::arg("l0a_bytes") = def.l0a_bytes,
        py::arg("l0b_bytes") = def.l0b_bytes, py::arg("l0c_bytes") = def.l0c_bytes,
        py::arg("num_cores") = def.num_cores,
        "Block sizes, UB/L1/L0 budgets and the per-core unit schedule of the flash-attention kernel.");
  a.def("kernel_record", &kernel_record, py::arg("batch"), py::arg("heads"), py::arg("kv_heads"), py::arg("q_len"),
        py::arg("kv_len"), py::arg("head_dim"), py::arg("causal"), py::arg("kv_lens"), py::arg("scale"),
        py::arg("num_cores") = def.num_cores, "The tiling record the Ascend C kernel reads, as a dict.");
  a.def("simulate", &simulate, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("causal"),
        py::arg("scale"), py::arg("kv_lens") = py::none(), py::arg("ub_bytes") = def.ub_bytes,
        py::arg("l1_bytes") = def.l1_bytes, py::arg("l0a_bytes") = def.l0a_bytes, py::arg("l0b_bytes") = def.l0b_bytes,
        py::arg("l0c_bytes") = def.l0c_bytes, py::arg("num_cores") = def.num_cores,
        "Runs the kernel's tile schedule on the CPU in float32, writing out; returns the plan it ran.");
  py::dict defaults;
  defaults["ub_bytes"] = def.ub_bytes;
  defaults["l1_bytes"] = def.l1_bytes;
  defaults["l0a_bytes"] = def.l0a_bytes;
  defaults["l0b_bytes"] = def.l0b_bytes;
  defaults["l0c_bytes"] = def.l0c_bytes;
  defaults["num_cores"] = def.num_cores;
  a.attr("ATLAS_A2_DEFAULTS") = defaults;
}

}  // namespace
}  // namespace pangu

PANGU_REGISTER_BINDINGS(ascend, pangu::bind);
