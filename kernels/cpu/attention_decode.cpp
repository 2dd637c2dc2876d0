#include "kernels/cpu/attention_decode.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/convert.h"
#include "common/threads.h"

namespace pangu::attention {

namespace {
constexpr int64_t kMinPieceKeys = 2 * kKeyBlock;
}

bool plan_splits(const Problem& p, const std::vector<Item>& items, int threads, SplitPlan& plan) {
  const int64_t n = static_cast<int64_t>(items.size());
  if (n == 0 || n >= 2 * threads) return false;
  const int64_t want = (2 * threads + n - 1) / n;
  const int64_t G = p.heads / p.kv_heads;
  bool any = false;
  plan.first_slot.assign(1, 0);
  for (const Item& it : items) {
    const SeqSpan& s = p.seqs[it.batch];
    KeyRange first = visible_keys(p, s, it.q0), last = visible_keys(p, s, it.q0 + it.q_count - 1);
    int64_t lo = std::max<int64_t>(first.lo, 0) / kKeyBlock * kKeyBlock, hi = std::min(last.hi + 1, s.k_len);
    int64_t span = std::max<int64_t>(hi - lo, 0);
    int64_t pieces = std::clamp<int64_t>(span / kMinPieceKeys, 1, want);
    any = any || pieces > 1;
    // Piece boundaries on key-block multiples so every piece runs whole blocks but the last.
    int64_t blocks = (span + kKeyBlock - 1) / kKeyBlock;
    for (int64_t k = 0; k < pieces; ++k) {
      Item piece = it;
      piece.k_begin = lo + blocks * k / pieces * kKeyBlock;
      piece.k_end = std::min(hi, lo + blocks * (k + 1) / pieces * kKeyBlock);
      piece.slot = static_cast<int64_t>(plan.items.size());
      plan.items.push_back(piece);
    }
    plan.owners.push_back(it);
    plan.first_slot.push_back(static_cast<int64_t>(plan.items.size()));
    plan.rows_per_slot = std::max(plan.rows_per_slot, G * it.q_count);
  }
  if (!any) {
    plan = SplitPlan();
    return false;
  }
  plan.out.assign(static_cast<size_t>(plan.items.size() * plan.rows_per_slot * p.dim), 0.0f);
  plan.lse.assign(static_cast<size_t>(plan.items.size() * plan.rows_per_slot),
                  -std::numeric_limits<float>::infinity());
  return true;
}

void combine_splits(const Problem& p, const ForwardOutputs& o, const SplitPlan& plan) {
  const int64_t D = p.dim, G = p.heads / p.kv_heads, R = plan.rows_per_slot;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  parallel_for(static_cast<int64_t>(plan.owners.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(static_cast<size_t>(D));
    for (int64_t i = begin; i < end; ++i) {
      const Item& it = plan.owners[i];
      const SeqSpan& s = p.seqs[it.batch];
      const int64_t s0 = plan.first_slot[i], s1 = plan.first_slot[i + 1];
      for (int64_t r = 0; r < G * it.q_count; ++r) {
        float mx = neg_inf;
        for (int64_t k = s0; k < s1; ++k) mx = std::max(mx, plan.lse[k * R + r]);
        std::fill(acc.begin(), acc.end(), 0.0f);
        float total = 0.0f;
        if (mx != neg_inf) {
          for (int64_t k = s0; k < s1; ++k) {
            float lse = plan.lse[k * R + r];
            if (lse == neg_inf) continue;
            float w = std::exp(lse - mx);
            total += w;
            const float* part = plan.out.data() + (k * R + r) * D;
            for (int64_t d = 0; d < D; ++d) acc[d] += w * part[d];
          }
          for (int64_t d = 0; d < D; ++d) acc[d] /= total;
        }
        const int64_t g = r / it.q_count, t = r % it.q_count, h = it.kv_head * G + g, row = s.q_offset + it.q0 + t;
        char* dst = static_cast<char*>(o.out) +
                    (it.batch * o.out_strides.batch + h * o.out_strides.head + row * o.out_strides.seq) *
                        dtype_size(p.dtype);
        store_from_f32(acc.data(), dst, p.dtype, static_cast<size_t>(D));
        if (o.lse)
          o.lse[it.batch * o.lse_strides.batch + h * o.lse_strides.head + row * o.lse_strides.seq] =
              mx == neg_inf ? neg_inf : mx + std::log(total);
      }
    }
  });
}

}  // namespace pangu::attention
