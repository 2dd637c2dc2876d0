// The tiling record the host writes to device memory and the Ascend C kernel reads: plain 32-bit
// fields only (no std types), so the same definition compiles for the host and for the AI Core.
// Filled by pack_kernel_tiling() (flash_attention_tiling.h); read by flash_attention_kernel.cpp.
#pragma once

#include <cstdint>

namespace pangu::ascend {

constexpr int32_t kKernelMaxCores = 128;

struct FlashAttentionTilingData {
  int32_t batch;
  int32_t heads;
  int32_t kv_heads;
  int32_t q_len;
  int32_t kv_len;      // padded KV length (the tensors' dimension 2)
  int32_t head_dim;
  int32_t group;       // heads / kv_heads
  int32_t block_q;
  int32_t block_kv;
  int32_t rows;        // group * block_q
  int32_t q_blocks;
  int32_t chunks;      // ceil(head_dim / 64)
  int32_t causal;      // 0 or 1
  int32_t has_kv_lens; // 1: read per-sequence lengths from the kv_lens argument (int32, one per batch)
  int32_t num_units;
  int32_t used_cores;  // the launch's block dimension
  float scale;
  int32_t reserved;
  int32_t core_begin[kKernelMaxCores + 1];  // core c runs units [core_begin[c], core_begin[c + 1])
};

}  // namespace pangu::ascend
