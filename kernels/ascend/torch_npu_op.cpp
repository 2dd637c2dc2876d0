// torch_npu registration of the Ascend C flash-attention forward kernel as the operator
// torch.ops.pangu_ascend.flash_attention_fwd(q, k, v, kv_lens, causal, scale) -> Tensor.
//
// Built only with the CANN toolkit and torch_npu (kernels/ascend/ascend.cmake) into
// libpangu_ascend_ops.so next to pangu_core/_core; pangu_core.attention.npu loads it with
// torch.ops.load_library when the "ascendc" backend is chosen. The host plans the tiling with the same
// plain C++ planner CI tests (flash_attention_tiling.cpp), copies the kernel record to the device and
// launches one block per used vector core on the current NPU stream. A Meta implementation gives
// shapes for tracing. Forward only: training uses torch_npu.npu_fusion_attention.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "aclrtlaunch_pangu_flash_attention_fwd_bf16.h"
#include "aclrtlaunch_pangu_flash_attention_fwd_f16.h"
#include "common/errors.h"
#include "kernels/ascend/host/flash_attention_tiling.h"
#include "tiling/platform/platform_ascendc.h"
#include "torch_npu/csrc/core/npu/NPUStream.h"

namespace pangu::ascend {
namespace {

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const c10::optional<at::Tensor>& kv_lens, double scale) {
  const char* names[] = {"q", "k", "v"};
  const at::Tensor* tensors[] = {&q, &k, &v};
  for (int i = 0; i < 3; ++i) {
    const at::Tensor& t = *tensors[i];
    TORCH_CHECK(t.device().type() == c10::DeviceType::PrivateUse1, names[i], ": expected a tensor on npu, got ",
                t.device());
    TORCH_CHECK(t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16, names[i],
                ": expected float16 or bfloat16, got ", t.scalar_type());
    TORCH_CHECK(t.dim() == 4, names[i], ": expected 4 dimensions (batch, heads, seq, head_dim), got ", t.sizes());
    TORCH_CHECK(t.is_contiguous(), names[i], ": expected a contiguous tensor");
    TORCH_CHECK(t.scalar_type() == q.scalar_type(), names[i], ": expected ", q.scalar_type(), " like q, got ",
                t.scalar_type());
  }
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(3) == q.size(3), "k: expected (", q.size(0), ", kv_heads, kv_len, ",
              q.size(3), "), got ", k.sizes());
  TORCH_CHECK(v.sizes() == k.sizes(), "v: expected shape ", k.sizes(), " like k, got ", v.sizes());
  TORCH_CHECK(scale > 0.0, "scale: expected > 0, got ", scale);
  if (kv_lens.has_value()) {
    TORCH_CHECK(kv_lens->dim() == 1 && kv_lens->size(0) == q.size(0), "kv_lens: expected shape (", q.size(0),
                ",), got ", kv_lens->sizes());
    TORCH_CHECK(kv_lens->scalar_type() == at::kInt || kv_lens->scalar_type() == at::kLong,
                "kv_lens: expected int32 or int64, got ", kv_lens->scalar_type());
  }
}

HardwareSpec device_spec() {
  HardwareSpec hw;
  auto* platform = platform_ascendc::PlatformAscendCManager::GetInstance();
  TORCH_CHECK(platform != nullptr, "npu: the Ascend C platform query is unavailable");
  uint64_t ub = 0;
  platform->GetCoreMemSize(platform_ascendc::CoreMemType::UB, ub);
  if (ub > 0) hw.ub_bytes = static_cast<int64_t>(ub);
  const int64_t cores = static_cast<int64_t>(platform->GetCoreNumAiv());
  if (cores > 0) hw.num_cores = cores < kKernelMaxCores ? cores : kKernelMaxCores;
  return hw;
}

at::Tensor flash_attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const c10::optional<at::Tensor>& kv_lens, bool causal, double scale) {
  check_inputs(q, k, v, kv_lens, scale);
  AttentionShape shape;
  shape.batch = q.size(0);
  shape.heads = q.size(1);
  shape.q_len = q.size(2);
  shape.head_dim = q.size(3);
  shape.kv_heads = k.size(1);
  shape.kv_len = k.size(2);
  shape.elem_bytes = 2;
  shape.causal = causal;
  if (kv_lens.has_value()) {
    at::Tensor host = kv_lens->to(at::kCPU, at::kLong).contiguous();
    shape.kv_lens.assign(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel());
  }
  Tiling tiling;
  FlashAttentionTilingData record{};
  try {
    tiling = plan_tiling(shape, device_spec());
    record = pack_kernel_tiling(shape, tiling, static_cast<float>(scale));
  } catch (const Error& e) {
    TORCH_CHECK(false, "flash_attention_fwd: ", e.what());
  }
  at::Tensor out = at::empty_like(q);
  if (tiling.num_units == 0) return out;

  at::Tensor record_host = at::empty({static_cast<int64_t>(sizeof(record))}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(record_host.data_ptr(), &record, sizeof(record));
  at::Tensor record_device = record_host.to(q.device());
  at::Tensor lens_device = kv_lens.has_value()
                               ? kv_lens->to(q.device(), at::kInt).contiguous()
                               : at::zeros({1}, at::TensorOptions().dtype(at::kInt).device(q.device()));

  auto stream = c10_npu::getCurrentNPUStream().stream(false);
  const uint32_t blocks = static_cast<uint32_t>(tiling.used_cores);
  void* args[] = {q.data_ptr(), k.data_ptr(), v.data_ptr(), lens_device.data_ptr(), out.data_ptr(),
                  record_device.data_ptr()};
  uint32_t status = q.scalar_type() == at::kHalf
                        ? ACLRT_LAUNCH_KERNEL(pangu_flash_attention_fwd_f16)(blocks, stream, args[0], args[1], args[2],
                                                                             args[3], args[4], args[5])
                        : ACLRT_LAUNCH_KERNEL(pangu_flash_attention_fwd_bf16)(blocks, stream, args[0], args[1],
                                                                              args[2], args[3], args[4], args[5]);
  TORCH_CHECK(status == 0, "flash_attention_fwd: kernel launch failed with status ", status);
  // record_device and lens_device are freed after return, but the caching allocator hands their memory
  // only to later work on this same stream, which runs after the kernel.
  return out;
}

at::Tensor flash_attention_fwd_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const c10::optional<at::Tensor>& kv_lens, bool causal, double scale) {
  return at::empty_like(q);
}

}  // namespace
}  // namespace pangu::ascend

TORCH_LIBRARY(pangu_ascend, m) {
  m.def("flash_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? kv_lens, bool causal, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(pangu_ascend, PrivateUse1, m) {
  m.impl("flash_attention_fwd", TORCH_FN(pangu::ascend::flash_attention_fwd));
}

TORCH_LIBRARY_IMPL(pangu_ascend, Meta, m) {
  m.impl("flash_attention_fwd", TORCH_FN(pangu::ascend::flash_attention_fwd_meta));
}
