// The core's one thread system: a persistent pool that never waits for a thread that did not get a
// core. Work is a count of groups handed out from a shared counter; the calling thread works too,
// and the call returns as soon as every group is done. A helper woken late (its core busy with another
// process) finds the counter exhausted and does nothing, instead of holding everyone at a barrier for a
// scheduler time slice, which is what a spinning OpenMP team costs on a shared, oversubscribed machine.
// Between calls helpers look for new work for a few microseconds, then sleep on a condition
// variable, so an idle pool takes no CPU. parallel_for (threads.h) and the merge kernels both run
// on it.
#pragma once

#include <cstdint>
#include <functional>

namespace pangu {

// Hands out the next group index, or -1 when none is left.
using ClaimGroup = std::function<int64_t()>;

// Runs body(first, claim) on the calling thread and on up to threads - 1 pool helpers; each call of
// body starts with the group `first` it already holds and takes more with claim() until -1, and may
// keep per-call state (scratch, partial sums) that it folds in before returning. Every group is run
// exactly once. Returns when all groups are done; rethrows the first exception a body threw (the
// remaining groups are then skipped). threads <= 1 or groups <= 1 runs inline.
// Thread-safe: concurrent and nested calls are allowed (a call whose helpers are busy elsewhere
// runs its groups on the calling thread). The pool grows to the largest `threads` - 1 ever asked
// for; a forked child starts a pool of its own.
void run_groups(int64_t groups, int threads, const std::function<void(int64_t first, const ClaimGroup& claim)>& body);

}  // namespace pangu
