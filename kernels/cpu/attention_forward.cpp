// Attention forward: plans work items over (sequence, kv head, query block), balances causal work
// across threads, and hands them to the active ISA path (splitting the keys when items are few).
#include <algorithm>
#include <utility>

#include "common/convert.h"

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

// Packs K^T (or V^T) for every (sequence, kv head, key block) once, in parallel, when some sequence has
// several query blocks (each would otherwise repack the same keys). Returns an empty pack if not.
PackedKeys pack_transposed(const Problem& p, const void* base, const Strides& strides, std::vector<float>& storage) {
  PackedKeys packed;
  const int64_t G = p.heads / p.kv_heads, D = p.dim, BK = kKeyBlock;
  bool reused = false;
  int64_t total = 0;
  for (const SeqSpan& s : p.seqs) {
    reused = reused || s.q_len > query_block(G, s.q_len);
    int64_t blocks = (s.k_len + BK - 1) / BK;
    packed.seq_base.push_back(total);
    packed.seq_blocks.push_back(blocks);
    total += blocks * p.kv_heads;
  }
  if (!reused || total == 0) return PackedKeys();
  storage.assign(static_cast<size_t>(total * D * BK), 0.0f);
  std::vector<std::pair<int64_t, int64_t>> tasks;  // (sequence, block index within its kv heads)
  for (int64_t b = 0; b < static_cast<int64_t>(p.seqs.size()); ++b)
    for (int64_t i = 0; i < packed.seq_blocks[b] * p.kv_heads; ++i) tasks.emplace_back(b, i);
  const int64_t elem = dtype_size(p.dtype);
  parallel_for(static_cast<int64_t>(tasks.size()), 16, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(D));
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = tasks[t].first, h = tasks[t].second / packed.seq_blocks[b];
      const int64_t k0 = (tasks[t].second % packed.seq_blocks[b]) * BK;
      const SeqSpan& s = p.seqs[b];
      float* dst = storage.data() + (packed.seq_base[b] + tasks[t].second) * D * BK;
      const int64_t nk = std::min(BK, s.k_len - k0);
      for (int64_t j = 0; j < nk; ++j) {
        const char* src = static_cast<const char*>(base) +
                          (b * strides.batch + h * strides.head + (s.k_offset + k0 + j) * strides.seq) * elem;
        load_as_f32(src, p.dtype, row.data(), static_cast<size_t>(D));
        for (int64_t d = 0; d < D; ++d) dst[d * BK + j] = row[d];
      }
    }
  });
  packed.data = storage.data();
  return packed;
}

void forward(const Problem& p, const ForwardOutputs& o) {
  const Kernels& kernels = kernels_for(active_isa());
  std::vector<Item> items = plan_items(p);
  if (kernels.forward_all && kernels.forward_all(p, o, items)) return;
  std::vector<float> storage;
  PackedKeys packed = pack_transposed(p, p.k, p.k_strides, storage);
  SplitPlan plan;
  if (plan_splits(p, items, num_threads(), plan)) {
    Partials part{plan.out.data(), plan.lse.data(), plan.rows_per_slot};
    parallel_for(static_cast<int64_t>(plan.items.size()), 1, [&](int64_t begin, int64_t end) {
      kernels.forward_items(p, o, part, packed, plan.items.data(), begin, end);
    });
    combine_splits(p, o, plan);
    return;
  }
  Partials none;
  parallel_for(static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    kernels.forward_items(p, o, none, packed, items.data(), begin, end);
  });
}

}  // namespace pangu::attention
