#include "kernels/ascend/host/flash_attention_sim.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/convert.h"
#include "common/threads.h"

namespace pangu::ascend {
namespace {

void check_inputs(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out) {
  const char* names[] = {"q", "k", "v", "out"};
  const TensorView* views[] = {&q, &k, &v, &out};
  for (int i = 0; i < 4; ++i) {
    check_cpu(*views[i], names[i]);
    check_dtype(*views[i], names[i], {DType::F32, DType::F16, DType::BF16});
    check_dim(*views[i], names[i], 4);
    check_contiguous(*views[i], names[i]);
  }
  check_same_dtype(k, "k", q, "q");
  check_same_dtype(v, "v", q, "q");
  check_same_dtype(out, "out", q, "q");
  check_same_shape(v, "v", k, "k");
  check_same_shape(out, "out", q, "q");
  check_writable(out, "out");
  PANGU_CHECK(k.size(0) == q.size(0), Value, "k: expected batch ", q.size(0), " like q, got shape ", k.shape_str());
  PANGU_CHECK(k.size(3) == q.size(3), Value, "k: expected head_dim ", q.size(3), " like q, got shape ", k.shape_str());
}

// The kernel's state for one tile: float32 Q rows, accumulators and running statistics.
struct TileState {
  std::vector<float> q, o, m, l;
};

// Executes one unit exactly as the kernel does (see flash_attention_kernel.cpp, ComputeBlock).
void run_unit(const AttentionShape& s, const Tiling& t, const Unit& u, const char* q, const char* k, const char* v,
              char* out, DType dtype, float scale, TileState& st, std::vector<float>& kf, std::vector<float>& vf,
              std::vector<float>& score, std::vector<float>& partial) {
  const int64_t d = s.head_dim, eb = dtype_size(dtype);
  const int64_t nq = u.q_end - u.q_begin;
  const int64_t rows = t.group * nq;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t g = 0; g < t.group; ++g) {
    const int64_t head = u.kv_head * t.group + g;
    const int64_t offset = ((u.batch * s.heads + head) * s.q_len + u.q_begin) * d;
    load_as_f32(q + offset * eb, dtype, st.q.data() + g * nq * d, static_cast<size_t>(nq * d));
  }
  std::fill(st.o.begin(), st.o.begin() + rows * d, 0.0f);
  std::fill(st.m.begin(), st.m.begin() + rows, neg_inf);
  std::fill(st.l.begin(), st.l.begin() + rows, 0.0f);
  const int64_t kv_base = (u.batch * s.kv_heads + u.kv_head) * s.kv_len * d;
  for (int64_t j = 0; j < u.kv_blocks; ++j) {
    const int64_t kv_begin = j * t.block_kv;
    const int64_t n_valid = std::min(t.block_kv, u.kv_len - kv_begin);
    load_as_f32(k + (kv_base + kv_begin * d) * eb, dtype, kf.data(), static_cast<size_t>(n_valid * d));
    load_as_f32(v + (kv_base + kv_begin * d) * eb, dtype, vf.data(), static_cast<size_t>(n_valid * d));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t qpos = u.q_begin + r % nq;
      const int64_t cnt = std::clamp<int64_t>(visible_keys(s.causal, qpos, s.q_len, u.kv_len) - kv_begin, 0, n_valid);
      if (cnt == 0) continue;
      const float* qrow = st.q.data() + r * d;
      // QK^T by 64-lane chunks: lane products, a per-key sum of each chunk, chunks added in order.
      for (int64_t ch = 0; ch < t.chunks; ++ch) {
        const int64_t lane0 = ch * 64, lanes = std::min<int64_t>(64, d - lane0);
        for (int64_t c = 0; c < cnt; ++c) {
          const float* krow = kf.data() + c * d + lane0;
          float sum = 0.0f;
          for (int64_t x = 0; x < lanes; ++x) sum += qrow[lane0 + x] * krow[x];
          partial[static_cast<size_t>(c)] = sum;
        }
        for (int64_t c = 0; c < cnt; ++c)
          score[static_cast<size_t>(c)] = ch == 0 ? partial[static_cast<size_t>(c)]
                                                  : score[static_cast<size_t>(c)] + partial[static_cast<size_t>(c)];
      }
      float block_max = neg_inf;
      for (int64_t c = 0; c < cnt; ++c) {
        score[static_cast<size_t>(c)] *= scale;
        block_max = std::max(block_max, score[static_cast<size_t>(c)]);
      }
      const float m_old = st.m[static_cast<size_t>(r)];
      const float m_new = std::max(m_old, block_max);
      const float shift = -m_new;
      float block_sum = 0.0f;
      for (int64_t c = 0; c < cnt; ++c) {
        float p = std::exp(score[static_cast<size_t>(c)] + shift);
        score[static_cast<size_t>(c)] = p;
        block_sum += p;
      }
      const float alpha = m_old == neg_inf ? 0.0f : std::exp(m_old - m_new);
      st.m[static_cast<size_t>(r)] = m_new;
      st.l[static_cast<size_t>(r)] = alpha * st.l[static_cast<size_t>(r)] + block_sum;
      float* orow = st.o.data() + r * d;
      for (int64_t x = 0; x < d; ++x) orow[x] *= alpha;
      for (int64_t c = 0; c < cnt; ++c) {
        const float p = score[static_cast<size_t>(c)];
        const float* vrow = vf.data() + c * d;
        for (int64_t x = 0; x < d; ++x) orow[x] += p * vrow[x];
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* orow = st.o.data() + r * d;
    const float l = st.l[static_cast<size_t>(r)];
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int64_t x = 0; x < d; ++x) orow[x] *= inv;
  }
  for (int64_t g = 0; g < t.group; ++g) {
    const int64_t head = u.kv_head * t.group + g;
    const int64_t offset = ((u.batch * s.heads + head) * s.q_len + u.q_begin) * d;
    store_from_f32(st.o.data() + g * nq * d, out + offset * eb, dtype, static_cast<size_t>(nq * d));
  }
}

}  // namespace

AttentionShape shape_of(const TensorView& q, const TensorView& k, const TensorView& v,
                        const std::vector<int64_t>& kv_lens, bool causal) {
  check_inputs(q, k, v, q);
  AttentionShape s;
  s.batch = q.size(0);
  s.heads = q.size(1);
  s.q_len = q.size(2);
  s.head_dim = q.size(3);
  s.kv_heads = k.size(1);
  s.kv_len = k.size(2);
  // Tiles are planned for the tensors the NPU kernel takes (float16 / bfloat16): a float32 input is
  // simulated as its bfloat16 copy would run, so the schedule is the kernel's.
  s.elem_bytes = dtype_size(q.dtype == DType::F32 ? DType::BF16 : q.dtype);
  s.causal = causal;
  s.kv_lens = kv_lens;
  return s;
}

Tiling simulate(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                const std::vector<int64_t>& kv_lens, bool causal, double scale, const HardwareSpec& hw) {
  check_inputs(q, k, v, out);
  PANGU_CHECK(std::isfinite(scale) && scale > 0.0, Value, "scale: expected a finite number > 0, got ", scale);
  const AttentionShape s = shape_of(q, k, v, kv_lens, causal);
  Tiling t = plan_tiling(s, hw);
  const int64_t d = s.head_dim;
  const char* qp = static_cast<const char*>(q.data);
  const char* kp = static_cast<const char*>(k.data);
  const char* vp = static_cast<const char*>(v.data);
  char* op = static_cast<char*>(out.data);
  const float fscale = static_cast<float>(scale);
  // Simulated cores own disjoint units and therefore disjoint output rows: they run in parallel.
  parallel_for(hw.num_cores, 1, [&](int64_t core_begin, int64_t core_end) {
    TileState st;
    st.q.resize(static_cast<size_t>(t.rows * d));
    st.o.resize(static_cast<size_t>(t.rows * d));
    st.m.resize(static_cast<size_t>(t.rows));
    st.l.resize(static_cast<size_t>(t.rows));
    std::vector<float> kf(static_cast<size_t>(t.block_kv * d)), vf(static_cast<size_t>(t.block_kv * d));
    std::vector<float> score(static_cast<size_t>(t.block_kv)), partial(static_cast<size_t>(t.block_kv));
    for (int64_t core = core_begin; core < core_end; ++core) {
      for (int64_t i = t.core_begin[static_cast<size_t>(core)]; i < t.core_begin[static_cast<size_t>(core + 1)]; ++i) {
        run_unit(s, t, unit_at(s, t, i), qp, kp, vp, op, q.dtype, fscale, st, kf, vf, score, partial);
      }
    }
  });
  return t;
}

}  // namespace pangu::ascend
