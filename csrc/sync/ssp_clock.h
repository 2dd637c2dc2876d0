// Stale synchronous parallel (SSP) clock for the latency-tolerant RL scheduler: rollout workers
// keep generating with slightly stale weights instead of idling, and the staleness stays bounded.
//
// Model. Each live worker i has a clock c_i (iterations it has finished). The learner has a
// version V (updates published so far; version v contains every update numbered <= v, version 0
// is the initial weights). The bound s >= 0 is fixed for the clock's life.
//
// Invariants (checked by the tests on every read):
//   1. Spread: a worker works on iteration c_i only while c_i <= min_j c_j + s over the live
//      workers j. tick() counts the finished iteration and then waits until that holds again
//      (the fast waits for the slowest); with s = 0 this is bulk synchronous.
//   2. Freshness: a reader at clock c sees every update through c - s - 1, i.e. it reads a
//      version >= c - s - 1. wait_version() blocks until such a version exists and returns the
//      newest one.
// Membership. Workers join and leave at run time; join() starts a worker at the slowest live
// clock (or at the learner's version when there is none) so it never breaks invariant 1. Every
// call of a worker counts as a heartbeat; a worker silent for longer than heartbeat_timeout_s,
// or declared dead explicitly, is removed and stops holding others back. Its later calls fail
// with PeerLost.
// Waiting. Every wait has a timeout (TimeoutError naming what it waited for); waits re-check for
// dead workers while they wait, so a crashed worker never deadlocks the others. close() wakes
// every waiter with QueueClosed. The bindings release the GIL around each wait.
// Thread-safety: every method may be called from any thread. O(workers) per call.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace pangu {

// Pure staleness arithmetic (invariant 2): the oldest version a reader at `clock` may use.
inline int64_t required_version(int64_t clock, int64_t staleness) { return clock - staleness - 1; }

class SSPClock {
 public:
  // staleness >= 0; heartbeat_timeout_s > 0, or <= 0 to disable heartbeat expiry.
  SSPClock(int64_t staleness, double heartbeat_timeout_s);
  // Takes the lock once so that destruction is ordered after every other thread's last call.
  ~SSPClock();

  int64_t staleness() const { return staleness_; }

  // Adds worker `id` (any non-negative integer not live now) and returns its starting clock.
  int64_t join(int64_t id);
  // Removes a live worker cleanly. KeyError if `id` is not live.
  void leave(int64_t id);
  // Removes a worker as dead (it stops holding others back). Returns false if it was not live.
  bool declare_dead(int64_t id);
  // Records that `id` is alive. PeerLost if it was declared dead, KeyError if unknown.
  void heartbeat(int64_t id);
  // Declares dead every worker whose last heartbeat is older than the timeout; returns their ids.
  std::vector<int64_t> reap();

  // Finishes the current iteration of `id`: increments c_id, then waits until
  // c_id <= min live clock + s and returns c_id. timeout_s < 0 waits forever. On TimeoutError the
  // finished iteration still counts; wait_turn() waits again without counting another.
  int64_t tick(int64_t id, double timeout_s);
  // Waits until c_id <= min live clock + s; returns c_id.
  int64_t wait_turn(int64_t id, double timeout_s);
  // Waits until the learner's version is >= required_version(c_id, s); returns the version.
  int64_t wait_version(int64_t id, double timeout_s);

  // The learner: sets its version to `version` (must not decrease) and wakes waiting readers.
  void publish(int64_t version);
  int64_t version() const;

  int64_t clock(int64_t id) const;    // KeyError if not live
  int64_t min_clock() const;          // slowest live clock; -1 when no worker is live
  std::vector<int64_t> live_workers() const;
  std::vector<int64_t> dead_workers() const;

  // Wakes every waiter with QueueClosed; later calls fail the same way. Idempotent.
  void close();
  bool closed() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Worker {
    int64_t clock = 0;
    Clock::time_point last_seen;
  };

  // With mutex_ held:
  int64_t min_clock_locked() const;
  std::vector<int64_t> reap_locked(Clock::time_point now);
  Worker& live_locked(int64_t id, const char* what);
  template <typename Ready>
  void wait_locked(std::unique_lock<std::mutex>& lock, double timeout_s, Ready ready, int64_t id,
                   const std::string& what);

  const int64_t staleness_;
  const double heartbeat_timeout_s_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<int64_t, Worker> live_;
  std::map<int64_t, bool> dead_;
  int64_t version_ = 0;
  bool closed_ = false;
};

}  // namespace pangu
