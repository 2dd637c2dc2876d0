#include "queue/native_loop.h"

#include <time.h>

#include <chrono>
#include <cmath>
#include <queue>
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

// Our queue behind the three calls the loop makes.
class OursAdapter {
 public:
  explicit OursAdapter(double age_boost) : queue_(options(age_boost)) {}
  void put(Payload payload, double priority) {
    queue_.put(payload, priority, kCurrentVersion, 0.0, handed_back_, nullptr);
  }
  Payload get() { return queue_.get(0.0, nullptr); }
  void advance_version(int64_t version) { queue_.advance_version(version); }
  bool intact(size_t resident) const { return queue_.size() == resident && handed_back_.empty(); }

 private:
  static QueueOptions options(double age_boost) {
    QueueOptions o;
    o.age_boost = age_boost;
    return o;
  }
  PriorityQueue queue_;
  std::vector<Payload> handed_back_;
};

// std::priority_queue of (key, sequence, payload) in the order ours defines: higher key first,
// lower sequence (older) first on equal keys; key = priority - age_boost * version.
class StdAdapter {
 public:
  explicit StdAdapter(double age_boost) : age_boost_(age_boost) {}
  void put(Payload payload, double priority) {
    heap_.push(Entry{priority - age_boost_ * static_cast<double>(version_), sequence_++, payload});
  }
  Payload get() {
    Payload p = heap_.top().payload;
    heap_.pop();
    return p;
  }
  void advance_version(int64_t version) { version_ = version; }
  bool intact(size_t resident) const { return heap_.size() == resident; }

 private:
  struct Entry {
    double key;
    uint64_t sequence;
    Payload payload;
  };
  struct Before {  // "a comes out after b": the max-heap's less-than
    bool operator()(const Entry& a, const Entry& b) const {
      return a.key < b.key || (a.key == b.key && a.sequence > b.sequence);
    }
  };
  double age_boost_;
  int64_t version_ = 0;
  uint64_t sequence_ = 0;
  std::priority_queue<Entry, std::vector<Entry>, Before> heap_;
};

template <typename Queue>
LoopTiming run_loop(Queue& queue, size_t ops, size_t resident, uint64_t seed) {
  // splitmix64: cheap, deterministic priorities that do not cost more than the queue itself.
  uint64_t state = seed;
  auto next_priority = [&state] {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53;
  };
  for (size_t i = 0; i < resident; ++i) queue.put(i + 1, next_priority());
  int64_t version = 0;
  uint64_t checksum = 0;
  const double cpu_start = thread_cpu_seconds();
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < ops / 2; ++i) {
    if ((i & 1023) == 1023) queue.advance_version(++version);
    queue.put(resident + i + 1, next_priority());
    checksum = checksum * 0x100000001B3ull + queue.get();  // FNV prime: order-sensitive
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double cpu_seconds = thread_cpu_seconds() - cpu_start;
  // Every put is matched by a get, so the queue must still hold `resident` items.
  PANGU_ASSERT(queue.intact(resident) && checksum != 0);
  return LoopTiming{seconds, cpu_seconds, checksum};
}

}  // namespace

LoopTiming push_pop_loop(size_t ops, size_t resident, double age_boost, uint64_t seed, LoopQueue which) {
  PANGU_CHECK(ops >= 2, Value, "ops: expected an integer >= 2, got ", ops);
  PANGU_CHECK(std::isfinite(age_boost) && age_boost >= 0, Value, "age_boost: expected a finite number >= 0, got ",
              age_boost);
  if (which == LoopQueue::StdPriorityQueue) {
    StdAdapter queue(age_boost);
    return run_loop(queue, ops, resident, seed);
  }
  OursAdapter queue(age_boost);
  return run_loop(queue, ops, resident, seed);
}

}  // namespace pangu::queue
