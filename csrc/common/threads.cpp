#include "common/threads.h"

#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

#include "common/errors.h"

#ifdef PANGU_WITH_OPENMP
#include <omp.h>
#endif

namespace pangu {
namespace {

int default_threads() {
  const char* env = std::getenv("OMP_NUM_THREADS");
  if (env != nullptr) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

std::atomic<int>& thread_setting() {
  static std::atomic<int> value{default_threads()};
  return value;
}

}  // namespace

int num_threads() { return thread_setting().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  PANGU_CHECK(n >= 1, Value, "n: expected a thread count >= 1, got ", n);
  thread_setting().store(n);
#ifdef PANGU_WITH_OPENMP
  omp_set_num_threads(n);
#endif
}

bool built_with_openmp() {
#ifdef PANGU_WITH_OPENMP
  return true;
#else
  return false;
#endif
}

namespace detail {

void run_parallel(int64_t chunks, int threads, const std::function<void(int64_t)>& body) {
#ifdef PANGU_WITH_OPENMP
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int64_t c = 0; c < chunks; ++c) body(c);
#else
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(chunks - 1));
  for (int64_t c = 1; c < chunks; ++c) workers.emplace_back(body, c);
  body(0);
  for (auto& w : workers) w.join();
#endif
}

}  // namespace detail
}  // namespace pangu
