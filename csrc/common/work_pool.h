// The core's one executor for parallel work, used by parallel_for (threads.h) and the merge kernels.
// Work is a count of groups handed out from a shared counter; the calling thread works too, and the
// call returns as soon as every group is done. A thread that lost its core to another process simply
// claims fewer groups.
//
// The threads are the process's OpenMP team when the core is built with OpenMP (the default where the
// compiler has it). With torch loaded that is torch's own team: torch and pangu_core share one set of
// compute threads, so torch's workers, which spin for a while after each torch operation, are the
// threads that run the next pangu_core call instead of competing with it for the cores. Otherwise,
// and in a process forked from one that may have started a team (libgomp's team does not survive
// fork), the threads are a persistent pool of the core's own whose helpers spin for a few
// microseconds after a call and then sleep, so an idle pool takes no CPU. PANGU_THREADS=pool (read
// at import) selects the pool in an OpenMP build too.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace pangu {

// Hands out the next group index, or -1 when none is left.
using ClaimGroup = std::function<int64_t()>;

// Runs body(first, claim) on the calling thread and on up to threads - 1 pool helpers; each call of
// body starts with the group `first` it already holds and takes more with claim() until -1, and may
// keep per-call state (scratch, partial sums) that it folds in before returning. Every group is run
// exactly once. Returns when all groups are done; rethrows the first exception a body threw (the
// remaining groups are then skipped). threads <= 1 or groups <= 1 runs inline.
// Thread-safe: concurrent and nested calls are allowed (a nested call, or one whose helpers are busy
// elsewhere, runs its groups on the calling thread). The pool grows to the largest `threads` - 1 ever
// asked for; a forked child starts a pool of its own.
void run_groups(int64_t groups, int threads, const std::function<void(int64_t first, const ClaimGroup& claim)>& body);

// The executor run_groups uses in this process: "openmp" or "pool" (see above).
const char* threads_backend();
// Whether the core was built with OpenMP.
bool built_with_openmp();
// Selects the executor ("openmp" or "pool") for every later call, process-wide. Throws ValueError
// naming `what` for another name, or for "openmp" in a build without OpenMP.
void set_threads_backend(const std::string& name, const char* what);
// Applies PANGU_THREADS from the environment ("", "openmp" or "pool"). Throws ValueError naming
// PANGU_THREADS for another value, or for "openmp" in a build without OpenMP, so that a bad value
// fails the import.
void apply_threads_environment();

}  // namespace pangu
