// Attention backward by recomputation: pass one gives dk, dv per key block (accumulating over all
// queries of the kv group), pass two gives dq per query block; neither pass shares output rows
// between threads, so no atomics or reductions are needed.
#include <algorithm>

#include "common/threads.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/attention_kernels.h"

namespace pangu::attention {

std::vector<Item> plan_query_items(const Problem& p);

void backward(const Problem& p, const BackwardTensors& t) {
  const Kernels& kernels = kernels_for(active_isa());
  std::vector<Item> head_items;
  for (int64_t b = 0; b < static_cast<int64_t>(p.seqs.size()); ++b)
    for (int64_t h = 0; h < p.kv_heads; ++h)
      if (p.seqs[b].q_len > 0) head_items.push_back(Item{b, h, 0, p.seqs[b].q_len, 0, p.seqs[b].k_len, -1});
  if (static_cast<int64_t>(head_items.size()) >= num_threads()) {
    // Keys of sequences with no queries get no rows written here; callers pass zeroed dk and dv.
    parallel_for(static_cast<int64_t>(head_items.size()), 1, [&](int64_t begin, int64_t end) {
      kernels.backward_fused(p, t, head_items.data(), begin, end);
    });
    return;
  }
  std::vector<Item> key_items;
  for (int64_t b = 0; b < static_cast<int64_t>(p.seqs.size()); ++b) {
    const SeqSpan& s = p.seqs[b];
    for (int64_t h = 0; h < p.kv_heads; ++h) {
      for (int64_t k0 = 0; k0 < s.k_len; k0 += kKeyBlock) {
        Item it;
        it.batch = b;
        it.kv_head = h;
        it.k_begin = k0;
        it.k_end = std::min(s.k_len, k0 + kKeyBlock);
        key_items.push_back(it);
      }
    }
  }
  parallel_for(static_cast<int64_t>(key_items.size()), 1, [&](int64_t begin, int64_t end) {
    kernels.backward_dkdv(p, t, key_items.data(), begin, end);
  });
  std::vector<Item> query_items = plan_query_items(p);
  std::vector<float> k_storage, v_storage;
  PackedKeys kt = pack_transposed(p, p.k, p.k_strides, k_storage);
  PackedKeys vt = pack_transposed(p, p.v, p.v_strides, v_storage);
  parallel_for(static_cast<int64_t>(query_items.size()), 1, [&](int64_t begin, int64_t end) {
    kernels.backward_dq(p, t, kt, vt, query_items.data(), begin, end);
  });
}

}  // namespace pangu::attention
