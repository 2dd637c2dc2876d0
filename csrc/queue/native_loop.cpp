#include "queue/native_loop.h"

#include <time.h>

#include <chrono>
#include <vector>

#include "common/errors.h"
#include "queue/priority_queue.h"

namespace pangu::queue {

namespace {

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace

LoopTiming push_pop_loop(size_t ops, size_t resident, double age_boost, uint64_t seed) {
  PANGU_CHECK(ops >= 2, Value, "ops: expected an integer >= 2, got ", ops);
  QueueOptions options;
  options.age_boost = age_boost;
  PriorityQueue queue(options);
  // splitmix64: cheap, deterministic priorities that do not cost more than the queue itself.
  uint64_t state = seed;
  auto next_priority = [&state] {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53;
  };
  std::vector<Payload> handed_back;
  for (size_t i = 0; i < resident; ++i) {
    queue.put(i + 1, next_priority(), kCurrentVersion, 0.0, handed_back, nullptr);
  }
  int64_t version = 0;
  uint64_t checksum = 0;
  const double cpu_start = thread_cpu_seconds();
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < ops / 2; ++i) {
    if ((i & 1023) == 1023) queue.advance_version(++version);
    queue.put(resident + i + 1, next_priority(), kCurrentVersion, 0.0, handed_back, nullptr);
    checksum += queue.get(0.0, nullptr);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double cpu_seconds = thread_cpu_seconds() - cpu_start;
  // Every put is matched by a get, so the queue must still hold `resident` items.
  PANGU_ASSERT(queue.size() == resident && handed_back.empty() && checksum > 0);
  return LoopTiming{seconds, cpu_seconds};
}

}  // namespace pangu::queue
