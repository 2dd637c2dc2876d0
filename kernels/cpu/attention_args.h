// Validation of attention arguments handed in as tensor views, and their translation into a
// Problem. Every check throws a typed pangu::Error naming the argument and what was expected.
#pragma once

#include <optional>

#include "common/tensor_view.h"
#include "kernels/cpu/attention.h"

namespace pangu::attention {

struct Options {
  bool causal = false;
  double scale = 0.0;  // <= 0 or NaN is rejected; callers pass 1/sqrt(dim) for the default
  int64_t window = 0;
};

// Padded layout: q (batch, heads, q_len, dim), k and v (batch, kv_heads, k_len, dim), optional
// kv_lens (batch,) int32/int64 in [0, k_len]. Varlen layout (cu_seqlens_q given): q (total_q, heads,
// dim), k and v (total_k, kv_heads, dim), cu_seqlens_q/k (batch + 1,) int32/int64, non-decreasing
// from 0 with the last entry <= total. Dim stride must be 1; other strides are free.
Problem make_problem(const TensorView& q, const TensorView& k, const TensorView& v,
                     const std::optional<TensorView>& cu_seqlens_q, const std::optional<TensorView>& cu_seqlens_k,
                     const std::optional<TensorView>& kv_lens, const Options& options);

// Strides of a (batch, head, seq) addressed tensor shaped like q (or k) in the problem's layout;
// checks its shape equals `like` and its dtype, device and writability.
Strides tensor_strides(const Problem& p, const TensorView& t, const char* arg, const TensorView& like,
                       const char* like_arg, bool writable);

// Strides of a log-sum-exp tensor: float32 (batch, heads, q_len) padded or (heads, total_q) varlen.
Strides lse_strides(const Problem& p, const TensorView& lse, const char* arg, const TensorView& q, bool writable);

}  // namespace pangu::attention
