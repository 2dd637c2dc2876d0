// Flash-decoding for the attention forward: when there are fewer work items than threads can use
// (decode: few queries per sequence, long KV cache), each item's key range is split into pieces
// computed in parallel, then merged by their log-sum-exp.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/attention_kernels.h"

namespace pangu::attention {

struct SplitPlan {
  std::vector<Item> items;   // split pieces, each with its scratch slot
  std::vector<Item> owners;  // the original items, in order; pieces of owner i are consecutive
  std::vector<int64_t> first_slot;  // owners.size() + 1 prefix offsets into the slots
  std::vector<float> out, lse;      // partial rows (slots x rows_per_slot x dim) and their lse
  int64_t rows_per_slot = 0;
};

// Splits `items` when fewer than 2 x threads of them exist and their key ranges are long (at least
// two key blocks per piece). Returns false (and leaves plan empty) when splitting does not pay.
bool plan_splits(const Problem& p, const std::vector<Item>& items, int threads, SplitPlan& plan);

// Merges the pieces of every owner into the final output rows and log-sum-exp. Multi-threaded.
void combine_splits(const Problem& p, const ForwardOutputs& o, const SplitPlan& plan);

}  // namespace pangu::attention
