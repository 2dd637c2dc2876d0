// CPU flash attention: tiled online-softmax forward (prefill and decode), recomputation backward.
//
// Layout: every tensor is addressed as (batch, head, seq, dim) through strides in elements, with the
// last (dim) stride 1. That covers the padded layout (batch, heads, seq, dim), transposed views of
// (batch, seq, heads, dim), and packed variable-length sequences (total, heads, dim) where a
// sequence's rows start at an offset (batch stride 0, offsets from cu_seqlens).
//
// Masking: key j is visible to query i of a sequence with q_len queries and k_len keys when
//   j < k_len, and (causal) j <= k_len - q_len + i (bottom-right alignment), and
//   (window > 0) j > k_len - q_len + i - window.
// A query that sees no key gets a zero output row and log-sum-exp -inf.
//
// Precision: float32, float16 or bfloat16 inputs, float32 accumulation everywhere. 16-bit inputs
// are widened to float32 as blocks are packed, except bfloat16 prefill at the AVX512-BF16 level on
// CPUs with AMX-BF16 tiles, where q.k and p.v are bfloat16 tile products (probabilities rounded to
// bfloat16, as GPU flash attention does) with float32 sums and a float32 online softmax.
// Threads: pangu::parallel_for over (sequence, kv head, query block[, key split]); thread-safe for
// distinct outputs. Complexity O(batch * heads * q_len * k_len * dim).
#pragma once

#include <cstdint>
#include <vector>

#include "common/cpu_features.h"
#include "common/dtype.h"

namespace pangu::attention {

// Where one sequence's rows live, in units of the seq stride (varlen offsets; 0 for padded).
struct SeqSpan {
  int64_t q_offset = 0, q_len = 0;
  int64_t k_offset = 0, k_len = 0;
};

// Strides in elements of a (batch, head, seq) addressed tensor; dim stride is 1.
struct Strides {
  int64_t batch = 0, head = 0, seq = 0;
};

struct Problem {
  DType dtype = DType::F32;         // of q, k, v, out (and dout/dq/dk/dv in the backward)
  int64_t heads = 0, kv_heads = 0;  // heads % kv_heads == 0 (GQA group = heads / kv_heads)
  int64_t dim = 0;                  // head dim, 1..256
  std::vector<SeqSpan> seqs;        // one per batch entry
  bool causal = false;
  int64_t window = 0;               // <= 0: no sliding window
  float scale = 1.0f;               // softmax scale applied to q.k
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  Strides q_strides, k_strides, v_strides;
};

struct ForwardOutputs {
  void* out = nullptr;  // dtype of q; strides out_strides
  Strides out_strides;
  float* lse = nullptr;  // optional natural-log log-sum-exp per (batch, head, seq); may be null
  Strides lse_strides;   // seq stride usually 1 for padded, heads for varlen
};

struct BackwardTensors {
  const void* out = nullptr;
  const void* dout = nullptr;
  const float* lse = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  Strides out_strides, dout_strides, lse_strides, dq_strides, dk_strides, dv_strides;
};

// Forward pass. Shapes and strides must already be validated (the bindings do it). Splits the key
// range across threads (flash-decoding) when there are fewer work items than threads.
void forward(const Problem& p, const ForwardOutputs& o);

// Backward pass by recomputation from the saved log-sum-exp: writes dq, dk, dv (dtype of q).
void backward(const Problem& p, const BackwardTensors& t);

}  // namespace pangu::attention
