#include "kernels/cpu/attention_args.h"
#include "kernels/cpu/attention_kernels.h"

#include <cmath>
#include <vector>

namespace pangu::attention {

namespace {

std::vector<int64_t> read_ints(const TensorView& t, const char* arg, int64_t expected_len) {
  check_cpu(t, arg);
  check_dtype(t, arg, {DType::I32, DType::I64});
  check_dim(t, arg, 1);
  PANGU_CHECK(t.size(0) == expected_len, Value, arg, ": expected ", expected_len, " entries, got ", t.size(0));
  std::vector<int64_t> out(static_cast<size_t>(expected_len));
  for (int64_t i = 0; i < expected_len; ++i) {
    int64_t off = i * t.strides[0];
    out[static_cast<size_t>(i)] = t.dtype == DType::I32 ? t.ptr<int32_t>()[off] : t.ptr<int64_t>()[off];
  }
  return out;
}

void check_input(const TensorView& t, const char* arg, int64_t dims) {
  check_cpu(t, arg);
  check_dtype(t, arg, {DType::F32, DType::F16, DType::BF16});
  check_dim(t, arg, dims);
  PANGU_CHECK(t.strides[static_cast<size_t>(dims - 1)] == 1 || t.size(dims - 1) == 1, Value, arg,
              ": expected the last (head_dim) dimension to be contiguous, got strides of shape ", t.shape_str());
}

std::vector<int64_t> check_offsets(const TensorView& t, const char* arg, int64_t entries, int64_t total) {
  std::vector<int64_t> cu = read_ints(t, arg, entries);
  PANGU_CHECK(cu[0] == 0, Value, arg, ": expected to start at 0, got ", cu[0]);
  for (size_t i = 1; i < cu.size(); ++i)
    PANGU_CHECK(cu[i] >= cu[i - 1], Value, arg, ": expected non-decreasing offsets, got ", cu[i - 1], " then ", cu[i],
                " at index ", i);
  PANGU_CHECK(cu.back() <= total, Value, arg, ": last offset ", cu.back(), " exceeds the ", total, " rows available");
  return cu;
}

}  // namespace

Problem make_problem(const TensorView& q, const TensorView& k, const TensorView& v,
                     const std::optional<TensorView>& cu_seqlens_q, const std::optional<TensorView>& cu_seqlens_k,
                     const std::optional<TensorView>& kv_lens, const Options& options) {
  const bool varlen = cu_seqlens_q.has_value();
  PANGU_CHECK(varlen == cu_seqlens_k.has_value(), Value,
              "cu_seqlens_k: expected both cu_seqlens_q and cu_seqlens_k or neither");
  PANGU_CHECK(!(varlen && kv_lens), Value, "kv_lens: not supported with cu_seqlens (the offsets give the lengths)");
  const int64_t dims = varlen ? 3 : 4;
  check_input(q, "q", dims);
  check_input(k, "k", dims);
  check_input(v, "v", dims);
  check_same_dtype(k, "k", q, "q");
  check_same_dtype(v, "v", q, "q");
  check_same_shape(v, "v", k, "k");
  PANGU_CHECK(std::isfinite(options.scale) && options.scale > 0, Value, "scale: expected a positive finite number, got ",
              options.scale);
  PANGU_CHECK(options.window >= 0, Value, "window: expected >= 0 (0 for none), got ", options.window);

  Problem p;
  p.dtype = q.dtype;
  p.causal = options.causal;
  p.window = options.window;
  p.scale = static_cast<float>(options.scale);
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  const int64_t hd = 1;  // heads dimension in both layouts
  p.heads = q.size(hd);
  p.kv_heads = k.size(hd);
  p.dim = q.size(dims - 1);
  PANGU_CHECK(p.dim >= 1 && p.dim <= kMaxDim, Value, "q: expected head_dim in [1, ", kMaxDim, "], got ", p.dim);
  PANGU_CHECK(k.size(dims - 1) == p.dim, Value, "k: expected head_dim ", p.dim, " like q, got ", k.size(dims - 1));
  PANGU_CHECK(p.heads >= 1, Value, "q: expected at least one head, got shape ", q.shape_str());
  PANGU_CHECK(p.kv_heads >= 1 && p.heads % p.kv_heads == 0, Value, "k: expected a number of heads dividing q's ",
              p.heads, ", got ", p.kv_heads);
  if (varlen) {
    const int64_t batch = cu_seqlens_q->numel() - 1;
    PANGU_CHECK(cu_seqlens_q->dim() == 1 && batch >= 1, Value, "cu_seqlens_q: expected a 1-D tensor of batch + 1 >= 2 offsets, got shape ",
                cu_seqlens_q->shape_str());
    std::vector<int64_t> cq = check_offsets(*cu_seqlens_q, "cu_seqlens_q", batch + 1, q.size(0));
    std::vector<int64_t> ck = check_offsets(*cu_seqlens_k, "cu_seqlens_k", batch + 1, k.size(0));
    for (int64_t b = 0; b < batch; ++b)
      p.seqs.push_back({cq[b], cq[b + 1] - cq[b], ck[b], ck[b + 1] - ck[b]});
    p.q_strides = {0, q.strides[1], q.strides[0]};
    p.k_strides = {0, k.strides[1], k.strides[0]};
    p.v_strides = {0, v.strides[1], v.strides[0]};
  } else {
    const int64_t batch = q.size(0);
    PANGU_CHECK(k.size(0) == batch, Value, "k: expected batch ", batch, " like q, got ", k.size(0));
    const int64_t q_len = q.size(2), k_len = k.size(2);
    std::vector<int64_t> lens(static_cast<size_t>(batch), k_len);
    if (kv_lens) {
      lens = read_ints(*kv_lens, "kv_lens", batch);
      for (int64_t b = 0; b < batch; ++b)
        PANGU_CHECK(lens[b] >= 0 && lens[b] <= k_len, Value, "kv_lens: expected values in [0, ", k_len, "], got ",
                    lens[b], " at index ", b);
    }
    for (int64_t b = 0; b < batch; ++b) p.seqs.push_back({0, q_len, 0, lens[b]});
    p.q_strides = {q.strides[0], q.strides[1], q.strides[2]};
    p.k_strides = {k.strides[0], k.strides[1], k.strides[2]};
    p.v_strides = {v.strides[0], v.strides[1], v.strides[2]};
  }
  return p;
}

Strides tensor_strides(const Problem& p, const TensorView& t, const char* arg, const TensorView& like,
                       const char* like_arg, bool writable) {
  check_cpu(t, arg);
  check_dtype(t, arg, {p.dtype});
  check_same_shape(t, arg, like, like_arg);
  if (writable) check_writable(t, arg);
  const int64_t dims = t.dim();
  PANGU_CHECK(t.strides[static_cast<size_t>(dims - 1)] == 1 || t.size(dims - 1) == 1, Value, arg,
              ": expected the last (head_dim) dimension to be contiguous");
  if (dims == 3) return {0, t.strides[1], t.strides[0]};
  return {t.strides[0], t.strides[1], t.strides[2]};
}

Strides lse_strides(const Problem& p, const TensorView& lse, const char* arg, const TensorView& q, bool writable) {
  check_cpu(lse, arg);
  check_dtype(lse, arg, {DType::F32});
  if (writable) check_writable(lse, arg);
  if (q.dim() == 3) {
    check_dim(lse, arg, 2);
    PANGU_CHECK(lse.size(0) == p.heads && lse.size(1) == q.size(0), Value, arg, ": expected shape (", p.heads, ", ",
                q.size(0), "), got ", lse.shape_str());
    return {0, lse.strides[0], lse.strides[1]};
  }
  check_dim(lse, arg, 3);
  PANGU_CHECK(lse.size(0) == q.size(0) && lse.size(1) == p.heads && lse.size(2) == q.size(2), Value, arg,
              ": expected shape (", q.size(0), ", ", p.heads, ", ", q.size(2), "), got ", lse.shape_str());
  return {lse.strides[0], lse.strides[1], lse.strides[2]};
}

}  // namespace pangu::attention
