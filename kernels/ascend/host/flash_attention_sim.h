// CPU simulation of the Ascend C flash-attention forward kernel: runs the tile schedule of
// plan_tiling() (same block sizes, same per-core unit ranges, same KV block order) with the kernel's
// float32 arithmetic step by step (64-lane chunked dot products, scale, running max, exp, running
// sum, rescale, P·V accumulation key by key, final 1/l), so CI checks the schedule and the online
// softmax update order that the NPU executes. It is a model of the kernel, not a fast CPU kernel.
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor_view.h"
#include "kernels/ascend/host/flash_attention_tiling.h"

namespace pangu::ascend {

// q (batch, heads, q_len, head_dim), k and v (batch, kv_heads, kv_len, head_dim), out shaped like q:
// contiguous CPU tensors of one dtype among float32, float16, bfloat16 (out writable). kv_lens: empty
// or one length per batch entry in [0, kv_len]. scale > 0 multiplies q·k. Rows that see no key are
// written as zeros. Returns the tiling it executed. Thread-safe for distinct outputs; parallel over
// the simulated cores. O(batch * heads * q_len * kv_len * head_dim).
Tiling simulate(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                const std::vector<int64_t>& kv_lens, bool causal, double scale, const HardwareSpec& hw);

// The AttentionShape that simulate() plans for (element size of the NPU kernel's input dtype: q's
// own for float16 / bfloat16, bfloat16's for float32), from validated views. Throws like simulate().
AttentionShape shape_of(const TensorView& q, const TensorView& k, const TensorView& v,
                        const std::vector<int64_t>& kv_lens, bool causal);

}  // namespace pangu::ascend
