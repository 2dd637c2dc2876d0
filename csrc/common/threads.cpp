#include "common/threads.h"

#include <atomic>
#include <cstdlib>
#include <thread>

#include "common/errors.h"

namespace pangu {
namespace {

// OMP_NUM_THREADS is what users already set to size a process's compute threads (torch reads it
// too), so it stays the default although the core no longer uses OpenMP.
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
}

}  // namespace pangu
