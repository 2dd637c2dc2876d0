// Host-side tiling for the Ascend C flash-attention forward kernel (kernels/ascend/
// flash_attention_kernel.cpp), in plain C++17 with no CANN headers, so that the block sizes and the
// tile schedule are computed, inspected and tested on any machine, and the CPU simulation
// (flash_attention_sim.h) executes exactly the schedule the kernel would.
//
// Layout: q (batch, heads, q_len, head_dim), k/v (batch, kv_heads, kv_len, head_dim) (BNSD),
// heads = kv_heads * group. Causal masking aligns the last query with the last key: query i of a
// sequence with kv length L sees keys 0 .. L - q_len + i (a row with no visible key outputs zeros).
//
// Work unit ("tile"): one batch entry, one KV head, a block of `block_q` query positions, for all
// `group` query heads that share the KV head, so a K/V block loaded into UB serves group * block_q
// rows (the GQA reuse that makes decode worthwhile). A unit walks its KV blocks of `block_kv` keys in
// increasing order; causal units stop at the last block any of their rows can see.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/ascend/host/flash_attention_tiling_data.h"

namespace pangu::ascend {

// On-chip buffer sizes in bytes and the core count. Defaults are the Atlas A2 (Ascend 910B) AI Core:
// 192 KiB Unified Buffer per vector core, 512 KiB L1, 64 KiB L0A, 64 KiB L0B, 128 KiB L0C per cube
// core, 48 vector cores (910B1/B2; other parts have fewer: pass the count the runtime reports).
struct HardwareSpec {
  int64_t ub_bytes = 192 * 1024;
  int64_t l1_bytes = 512 * 1024;
  int64_t l0a_bytes = 64 * 1024;
  int64_t l0b_bytes = 64 * 1024;
  int64_t l0c_bytes = 128 * 1024;
  int64_t num_cores = 48;
};

// The problem. kv_lens (optional, one per batch entry, each in [0, kv_len]) are the real cache
// lengths of a padded batch; empty means every sequence uses all kv_len keys.
struct AttentionShape {
  int64_t batch = 1;
  int64_t heads = 1;
  int64_t kv_heads = 1;
  int64_t q_len = 1;
  int64_t kv_len = 1;
  int64_t head_dim = 64;
  int64_t elem_bytes = 2;  // input/output element size: 2 (float16, bfloat16) or 4 (float32, simulation)
  bool causal = false;
  std::vector<int64_t> kv_lens;
};

// Byte budget of one tile, buffer by buffer, as the kernel allocates it (each rounded to 32 bytes,
// the UB access granularity). K and V input queues hold two buffers each (double buffering).
struct UbBudget {
  int64_t q_in = 0;        // Q tile in input dtype (queue depth 1: loaded once per unit)
  int64_t k_in = 0;        // 2 x K block in input dtype (queue depth 2)
  int64_t v_in = 0;        // 2 x V block in input dtype (queue depth 2)
  int64_t o_out = 0;       // output tile in output dtype (queue depth 1)
  int64_t q_f32 = 0;       // Q tile cast to float32
  int64_t k_f32 = 0;       // K block cast to float32
  int64_t v_f32 = 0;       // V block cast to float32
  int64_t o_acc = 0;       // float32 output accumulator
  int64_t score_row = 0;   // one row of scores / probabilities (float32)
  int64_t product = 0;     // q_row * K products of one 64-lane chunk for a whole block
  int64_t partial = 0;     // per-key partial dot products of one chunk
  int64_t row_stats = 0;   // running max and sum per row
  int64_t reduce_work = 0; // ReduceMax/ReduceSum work space and 32-byte scalar scratch
  int64_t total() const {
    return q_in + k_in + v_in + o_out + q_f32 + k_f32 + v_f32 + o_acc + score_row + product + partial +
           row_stats + reduce_work;
  }
};

struct Tiling {
  int64_t block_q = 1;     // query positions per tile
  int64_t block_kv = 16;   // keys per KV block (multiple of 16, at most 255: one vector repeat per key)
  int64_t group = 1;       // query heads per KV head
  int64_t rows = 1;        // group * block_q: rows of a tile
  int64_t q_blocks = 1;    // ceil(q_len / block_q)
  int64_t kv_blocks = 1;   // ceil(kv_len / block_kv)
  int64_t num_units = 0;   // batch * kv_heads * q_blocks
  int64_t used_cores = 0;  // cores with at least one unit
  int64_t chunks = 1;      // ceil(head_dim / 64): 64-lane float32 chunks of a head_dim row
  UbBudget ub;
  int64_t l1_bytes = 0;    // Q tile + 2 K + 2 V blocks staged in L1 for a cube (Mmad) path
  int64_t l0a_bytes = 0;   // Q tile (input dtype) as the left matrix
  int64_t l0b_bytes = 0;   // K block (input dtype) as the right matrix
  int64_t l0c_bytes = 0;   // score tile rows x block_kv in float32
  std::vector<int64_t> core_begin;  // num_cores + 1 entries: core c runs units [core_begin[c], core_begin[c+1])
  std::vector<int64_t> unit_cost;   // (row, key) pairs each unit computes, the balancing weight
};

// One unit decoded from its index: unit = ((b * kv_heads) + kv_head) * q_blocks + q_block.
struct Unit {
  int64_t batch = 0;
  int64_t kv_head = 0;
  int64_t q_begin = 0;   // first query position
  int64_t q_end = 0;     // one past the last query position
  int64_t kv_len = 0;    // this sequence's real KV length
  int64_t kv_blocks = 0; // KV blocks the unit visits: [0, kv_blocks)
};

// Validates the problem and hardware, chooses block sizes that fit every buffer (UB with double
// buffering; L1 and L0A/B/C so the same schedule can stage QK^T and PV through the cube unit) and
// splits the units over the cores by cost, contiguously. Throws pangu::Error (ValueError) naming the
// argument on bad input or when no tile fits the buffers. O(units).
Tiling plan_tiling(const AttentionShape& shape, const HardwareSpec& hw = HardwareSpec{});

// The UB bytes a tile of `rows` rows and `block_kv` keys needs (see UbBudget). O(1).
UbBudget ub_budget(int64_t rows, int64_t block_kv, int64_t head_dim, int64_t elem_bytes);

// Decodes unit `index` of `tiling` for `shape`. O(1).
Unit unit_at(const AttentionShape& shape, const Tiling& tiling, int64_t index);

// Keys visible to query position `q` of a sequence with `kv_len` keys: [0, visible_keys(...)).
// Causal: kv_len - q_len + q + 1 clamped to [0, kv_len]; otherwise kv_len. O(1).
int64_t visible_keys(bool causal, int64_t q, int64_t q_len, int64_t kv_len);

// The record the kernel reads (flash_attention_tiling_data.h) for this plan; scale multiplies q·k.
// Throws ValueError when a dimension exceeds int32 or the plan uses more cores than the record holds.
FlashAttentionTilingData pack_kernel_tiling(const AttentionShape& shape, const Tiling& tiling, float scale);

// A readable one-line summary ("block_q=.. block_kv=.. ub=.. / ..") for logs and errors.
std::string describe(const Tiling& tiling, const HardwareSpec& hw);

}  // namespace pangu::ascend
