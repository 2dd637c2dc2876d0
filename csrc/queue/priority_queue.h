// Thread-safe, bounded, multi-producer multi-consumer priority queue of opaque payloads: the data
// queue between RL rollout workers and the learner. The payload is a pointer-sized handle the queue
// never looks into (bindings/object_queue.h stores owned Python references in it).
//
// Order. Each item has a priority (double, higher first), a policy version (int64) and an insertion
// sequence (ties go oldest first). With an age boost alpha >= 0 the order uses the effective priority
//     effective = priority + alpha * (current_version - version),
// so an item gains alpha per policy version it waits and nothing starves. Adding alpha * V to every
// item does not change their relative order, so the heap is keyed on the time-invariant part
//     key = priority - alpha * version
// and advancing the version needs no re-ordering: get stays O(log n) however long items wait.
//
// Capacity and overflow. `Block` waits (GIL-free, see WaitHooks) for room, `Reject` throws
// QueueFull, `DropLowest` removes the item that would come out last (lowest key, newest on ties) and
// hands it back to the putter; if the incoming item would itself come out last, it is handed back.
// Staleness. With max_staleness s >= 0, an item is stale once version < current_version - s.
// Advancing the version evicts stale items (handed back); a put of a stale item hands it straight
// back (counted as rejected). A put with a version above the current one is a ValueError.
//
// Errors: ValueError for bad arguments, TimeoutError when a wait runs out, QueueFull (Reject policy),
// QueueClosed for a put after close() and for a get on a closed, drained queue.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "queue/indexed_heap.h"

namespace pangu::queue {

using Payload = uintptr_t;

enum class Overflow { Block, Reject, DropLowest };

// "block", "reject", "drop_lowest"; parse_overflow throws ValueError naming `arg` and the known names.
const char* overflow_name(Overflow overflow);
Overflow parse_overflow(const std::string& name, const char* arg);

constexpr size_t kUnbounded = std::numeric_limits<uint32_t>::max() - 1;
constexpr int64_t kCurrentVersion = std::numeric_limits<int64_t>::min();  // put: "the current one"
constexpr double kForever = std::numeric_limits<double>::infinity();

struct QueueOptions {
  size_t capacity = kUnbounded;  // 1 .. kUnbounded
  Overflow overflow = Overflow::Block;
  double age_boost = 0.0;        // alpha >= 0, finite
  int64_t max_staleness = -1;    // < 0: no staleness limit
  int64_t version = 0;           // the current policy version at construction
};

struct QueueStats {
  // Ledger: put = got + evicted + dropped + size under every overflow policy, and every item that
  // put / put_many counted (one whose call did not fail with ValueError, Timeout or QueueClosed)
  // is either put or rejected.
  uint64_t put = 0;       // items offered and not rejected (a new item DropLowest refuses counts)
  uint64_t got = 0;       // items taken by get / get_batch
  uint64_t evicted = 0;   // items removed as stale by advance_version
  uint64_t dropped = 0;   // items removed or refused by the DropLowest overflow policy
  uint64_t rejected = 0;  // puts refused: Reject policy when full, or stale at put
  size_t size = 0;
  size_t capacity = 0;
  int64_t version = 0;
  double producer_wait_s = 0.0;  // total time producers spent blocked
  double consumer_wait_s = 0.0;  // total time consumers spent blocked
  int64_t max_age_at_pop = 0;    // largest current_version - version seen by a get
  size_t waiting_producers = 0;  // threads blocked in put / put_many right now
  size_t waiting_consumers = 0;  // threads blocked in get / get_batch right now
  bool closed = false;
};

// Parallel arrays describing every queued item, in no particular order.
struct QueueSnapshot {
  std::vector<Payload> payloads;   // still owned by the queue
  std::vector<uint64_t> ids;
  std::vector<double> priorities;  // as put or last updated (no boost)
  std::vector<int64_t> versions;
  std::vector<double> effective;   // priority + alpha * (current_version - version)
};

// Called around every blocking wait, outside the queue's lock: before_wait() right before the
// thread sleeps, after_wait() once the waiting call is over (also when it throws). The Python layer
// releases the GIL here; native callers pass nullptr.
class WaitHooks {
 public:
  virtual ~WaitHooks() = default;
  virtual void before_wait() = 0;
  virtual void after_wait() = 0;
};

// All public methods are thread-safe. Complexity: put/get O(log n); put_many/get_batch O(k log n)
// under one lock acquisition; advance_version O(n) when it evicts, O(1) otherwise;
// update_priorities O(k log n), or O(n) when k is a large share of n; snapshot O(n).
class PriorityQueue {
 public:
  explicit PriorityQueue(const QueueOptions& options);
  PriorityQueue(const PriorityQueue&) = delete;
  PriorityQueue& operator=(const PriorityQueue&) = delete;

  // Adds one item (version kCurrentVersion: the queue's current version); waits up to
  // `timeout_s` (kForever: no limit) under the Block policy. Payloads
  // that leave because of this put (dropped, or the new one itself when stale or dropped) are
  // appended to `handed_back`; every other payload now belongs to the queue.
  void put(Payload payload, double priority, int64_t version, double timeout_s,
           std::vector<Payload>& handed_back, WaitHooks* hooks);

  // Adds n items in order (versions == nullptr: the current version for all). Reject is all or
  // nothing; Block inserts what fits and waits for room for the rest. `processed` counts the items
  // handled (queued or handed back) so a caller can release the rest when this throws part-way.
  void put_many(const Payload* payloads, const double* priorities, const int64_t* versions, size_t n,
                double timeout_s, std::vector<Payload>& handed_back, size_t& processed,
                WaitHooks* hooks);

  // Takes the best item, waiting up to `timeout_s`. A closed queue is drained first; once it is
  // empty, QueueClosed.
  Payload get(double timeout_s, WaitHooks* hooks);

  // Takes up to `n` best items (best first) once at least `min_n` are queued (1 <= min_n <= n).
  // After close(), returns what is left (even fewer than min_n), then QueueClosed. On timeout
  // nothing is taken.
  void get_batch(size_t n, size_t min_n, double timeout_s, std::vector<Payload>& out,
                 WaitHooks* hooks);

  // Sets the current policy version (never backwards) and returns the items it made stale.
  std::vector<Payload> advance_version(int64_t version);

  // New base priorities for the items with these ids (from snapshot()); ids no longer queued are
  // skipped. Returns how many items were updated.
  size_t update_priorities(const uint64_t* ids, const double* priorities, size_t n);

  // Changes alpha for every queued and future item (O(n) re-keying).
  void set_age_boost(double age_boost);

  // Wakes every waiter; later puts throw QueueClosed, gets drain what is left.
  void close();

  // Removes and returns every queued payload without counting them as got (for teardown).
  std::vector<Payload> drain();

  QueueSnapshot snapshot() const;
  QueueStats stats() const;
  size_t size() const;
  bool closed() const;
  int64_t version() const;
  double age_boost() const;
  const QueueOptions& options() const { return options_; }

 private:
  struct Slot {
    Payload payload;
    double priority;
    int64_t version;
    uint32_t generation;
    bool live;
  };

  using Clock = std::chrono::steady_clock;

  bool stale_locked(int64_t version) const;
  double key_of(double priority, int64_t version) const { return priority - age_boost_ * version; }
  void check_put_args(double priority, int64_t version, const char* where) const;
  // Inserts or hands back one item with the lock held and room available (or DropLowest).
  void insert_locked(Payload payload, double priority, int64_t version, std::vector<Payload>& handed_back);
  Payload pop_best_locked();
  // Appends the `take` best payloads, best first (counted as got).
  void take_best_locked(size_t take, std::vector<Payload>& out);
  void remove_slot_locked(uint32_t slot);
  void rebuild_locked();
  uint32_t alloc_slot_locked();
  bool has_room_locked() const { return best_.size() < options_.capacity; }
  void wake_producers_locked(size_t freed);
  void wake_consumers_locked(size_t added);
  // Sleeps on `cv` until ready() (true) or the deadline (false); nullptr deadline: no limit.
  template <typename Ready>
  bool wait_locked(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                   const Clock::time_point* deadline, size_t& waiting, double& wait_total, Ready ready);

  QueueOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  size_t waiting_consumers_ = 0;
  size_t waiting_producers_ = 0;
  size_t waiting_batch_consumers_ = 0;  // of waiting_consumers_, those waiting for min_n > 1

  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  std::vector<uint32_t> best_pos_;
  std::vector<uint32_t> worst_pos_;
  IndexedHeap<BestFirst> best_;
  IndexedHeap<WorstFirst> worst_;  // maintained only under DropLowest
  bool track_worst_;

  uint64_t next_seq_ = 0;
  int64_t version_;
  double age_boost_;
  bool closed_ = false;
  QueueStats stats_;
};

}  // namespace pangu::queue
