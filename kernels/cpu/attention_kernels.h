// Internal to the attention kernels: the work plan shared by the dispatcher and the per-ISA tile
// code, and the table of per-ISA entry points. Not part of the public API (see attention.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/cpu/attention.h"

namespace pangu::attention {

// Key block and the target number of rows (group heads x queries) per forward work item.
constexpr int64_t kKeyBlock = 128;
constexpr int64_t kRowTarget = 128;
constexpr int64_t kMaxDim = 256;

// One forward work item: the queries [q0, q0 + q_count) of every head of one kv group, against the
// keys [k_begin, k_end). slot < 0 writes the final output; otherwise a partial result for the
// flash-decoding combine (normalised rows and their log-sum-exp) at scratch slot `slot`.
struct Item {
  int64_t batch = 0, kv_head = 0, q0 = 0, q_count = 0;
  int64_t k_begin = 0, k_end = 0;
  int64_t slot = -1;
};

// Partial results of split items, rows laid out (group head, query) like an item's rows.
struct Partials {
  float* out = nullptr;  // [slots][rows_per_slot][dim]
  float* lse = nullptr;  // [slots][rows_per_slot], natural log
  int64_t rows_per_slot = 0;
};

// K^T of every key block, packed once when several query blocks will reuse it (prefill): block
// (sequence b, kv head h, key block i) is a zero-padded float [dim][kKeyBlock] array.
struct PackedKeys {
  const float* data = nullptr;  // null: items pack the blocks they visit themselves
  std::vector<int64_t> seq_base;    // index of the first block of sequence b
  std::vector<int64_t> seq_blocks;  // key blocks per kv head in sequence b
  const float* block(int64_t b, int64_t h, int64_t k0, int64_t dim) const {
    return data + (seq_base[b] + h * seq_blocks[b] + k0 / kKeyBlock) * dim * kKeyBlock;
  }
};

// Per-ISA entry points. forward_items runs items [begin, end); the backward runs either one fused
// pass over (sequence, kv head) items or two passes (dk/dv over key blocks, dq over query blocks).
struct Kernels {
  void (*forward_items)(const Problem&, const ForwardOutputs&, const Partials&, const PackedKeys&, const Item*, int64_t,
                        int64_t);
  void (*backward_dkdv)(const Problem&, const BackwardTensors&, const Item*, int64_t, int64_t);
  void (*backward_dq)(const Problem&, const BackwardTensors&, const PackedKeys&, const PackedKeys&, const Item*, int64_t,
                      int64_t);
  void (*backward_fused)(const Problem&, const BackwardTensors&, const Item*, int64_t, int64_t);
  // Optional whole-problem forward (AMX bfloat16 prefill); returns false when it does not apply.
  bool (*forward_all)(const Problem&, const ForwardOutputs&, const std::vector<Item>&);
};

namespace scalar { extern const Kernels kKernels; }
namespace avx2 { extern const Kernels kKernels; }
namespace avx512 { extern const Kernels kKernels; }
namespace avx512bf16 { extern const Kernels kKernels; }

const Kernels& kernels_for(Isa isa);

// Transposed float copies of a key-shaped tensor's blocks (see PackedKeys); empty (data null) when
// no sequence has more than one query block, since then nothing would reuse them.
PackedKeys pack_transposed(const Problem& p, const void* base, const Strides& strides, std::vector<float>& storage);

namespace {

// Visible key range [lo, hi] (inclusive; empty when lo > hi) of query t of a sequence.
struct KeyRange {
  int64_t lo, hi;
};

inline KeyRange visible_keys(const Problem& p, const SeqSpan& s, int64_t t) {
  int64_t pos = s.k_len - s.q_len + t;
  int64_t hi = p.causal ? std::min(pos, s.k_len - 1) : s.k_len - 1;
  int64_t lo = p.window > 0 ? std::max<int64_t>(0, pos - p.window + 1) : 0;
  return {lo, hi};
}

// Rows per work item's query block, so that group x block stays near kRowTarget.
inline int64_t query_block(int64_t group, int64_t q_len) {
  int64_t bq = std::max<int64_t>(1, kRowTarget / group);
  return std::min(bq, std::max<int64_t>(q_len, 1));
}

}  // namespace
}  // namespace pangu::attention
