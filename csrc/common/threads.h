// Thread count shared by every parallel part, and a parallel loop that propagates exceptions.
// Uses OpenMP when built with it (PANGU_WITH_OPENMP), otherwise short-lived std::threads.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>

namespace pangu {

// Threads a parallel_for uses: set_num_threads(n), else OMP_NUM_THREADS, else the core count.
int num_threads();
// n >= 1; throws ValueError otherwise. Process-wide.
void set_num_threads(int n);
bool built_with_openmp();

namespace detail {
void run_parallel(int64_t chunks, int threads, const std::function<void(int64_t)>& body);
}

// Calls fn(begin, end) over disjoint ranges covering [0, n), each at least `grain` long (but the
// last), on up to num_threads() threads. Blocks until all are done; rethrows the first exception.
// Runs inline when one thread or one chunk suffices.
template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int threads = num_threads();
  int64_t max_chunks = (n + grain - 1) / grain;
  int64_t chunks = max_chunks < threads ? max_chunks : threads;
  if (chunks <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
  detail::run_parallel(chunks, static_cast<int>(chunks), [&](int64_t c) {
    int64_t begin = n * c / chunks;
    int64_t end = n * (c + 1) / chunks;
    try {
      fn(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);
}

}  // namespace pangu
