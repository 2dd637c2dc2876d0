// Hooks that let tests reach the core's internals through _core.testing (bindings/bind_testing.cpp):
// writes through a view's own strides, and probes of the thread system. Nothing in the library calls
// them; each is small enough to be checked by reading.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "common/tensor_view.h"

namespace pangu::testing {

// Writes `value` (rounded to nearest even for 16-bit floats) into every element of t through its
// own strides, so tests can check that a view aliases the caller's memory. float32, float64,
// float16 or bfloat16; writable CPU tensor (errors name "tensor"). Single-threaded. O(numel).
void fill_strided(const TensorView& t, double value);

// One run_groups(groups, threads) call: how often each group ran. Group `fail_group` (-1: none)
// throws ValueError "group <g> failed" after counting, which run_groups must hand back. Thread-safe.
std::vector<int> work_pool_counts(int64_t groups, int threads, int64_t fail_group);

// One parallel_for(n, grain) call at the current num_threads(): the ranges fn saw, in the order
// they started, as (begin, end) pairs. The range holding index `fail_index` (-1: none) throws
// ValueError "index <i> failed" after being recorded. Thread-safe.
std::vector<std::pair<int64_t, int64_t>> parallel_for_ranges(int64_t n, int64_t grain, int64_t fail_index);

}  // namespace pangu::testing
