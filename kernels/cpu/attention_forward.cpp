// Attention forward: plans work items over (sequence, kv head, query block), balances causal work
// across threads, and hands them to the active ISA path (splitting the keys when items are few).
#include <algorithm>

#include "common/threads.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/attention_decode.h"
#include "kernels/cpu/attention_kernels.h"

namespace pangu::attention {

namespace {

// Query blocks of every (sequence, kv head). Within a head, blocks alternate first/last so that a
// contiguous range of items mixes cheap (early) and costly (late) causal blocks.
std::vector<Item> plan_items(const Problem& p) {
  const int64_t G = p.heads / p.kv_heads;
  std::vector<Item> items;
  for (int64_t b = 0; b < static_cast<int64_t>(p.seqs.size()); ++b) {
    const SeqSpan& s = p.seqs[b];
    if (s.q_len == 0) continue;
    const int64_t bq = query_block(G, s.q_len);
    const int64_t blocks = (s.q_len + bq - 1) / bq;
    for (int64_t h = 0; h < p.kv_heads; ++h) {
      for (int64_t k = 0; k < blocks; ++k) {
        int64_t block = (k % 2 == 0) ? k / 2 : blocks - 1 - k / 2;
        Item it;
        it.batch = b;
        it.kv_head = h;
        it.q0 = block * bq;
        it.q_count = std::min(bq, s.q_len - it.q0);
        it.k_begin = 0;
        it.k_end = s.k_len;
        items.push_back(it);
      }
    }
  }
  return items;
}

}  // namespace

std::vector<Item> plan_query_items(const Problem& p) { return plan_items(p); }

void forward(const Problem& p, const ForwardOutputs& o) {
  const Kernels& kernels = kernels_for(active_isa());
  std::vector<Item> items = plan_items(p);
  SplitPlan plan;
  if (plan_splits(p, items, num_threads(), plan)) {
    Partials part{plan.out.data(), plan.lse.data(), plan.rows_per_slot};
    parallel_for(static_cast<int64_t>(plan.items.size()), 1, [&](int64_t begin, int64_t end) {
      kernels.forward_items(p, o, part, plan.items.data(), begin, end);
    });
    combine_splits(p, o, plan);
    return;
  }
  Partials none;
  parallel_for(static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    kernels.forward_items(p, o, none, items.data(), begin, end);
  });
}

}  // namespace pangu::attention
