#include "queue/priority_queue.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "common/errors.h"

namespace pangu::queue {

namespace {

// Releases whatever the hooks guard (the GIL) for the rest of a blocking call. Declared before the
// unique_lock in each method so the queue lock is always released first: re-taking the GIL while
// holding the queue lock could deadlock against a thread that holds the GIL and wants the lock.
class HookGuard {
 public:
  explicit HookGuard(WaitHooks* hooks) : hooks_(hooks) { hooks_->before_wait(); }
  ~HookGuard() { hooks_->after_wait(); }
  HookGuard(const HookGuard&) = delete;
  HookGuard& operator=(const HookGuard&) = delete;

 private:
  WaitHooks* hooks_;
};

void enter_wait(std::unique_lock<std::mutex>& lock, std::optional<HookGuard>& guard, WaitHooks* hooks) {
  if (hooks != nullptr && !guard) {
    lock.unlock();
    guard.emplace(hooks);
    lock.lock();
  }
}

void check_timeout(double timeout_s) {
  PANGU_CHECK(timeout_s >= 0.0, Value, "timeout: expected None or a number of seconds >= 0, got ",
              timeout_s);
}

// Waits longer than ~30 years count as forever (and keep the time_point arithmetic in range).
std::optional<std::chrono::steady_clock::time_point> deadline_after(double timeout_s) {
  if (timeout_s > 1e9) return std::nullopt;
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
             std::chrono::duration<double>(timeout_s));
}

}  // namespace

const char* overflow_name(Overflow overflow) {
  switch (overflow) {
    case Overflow::Block: return "block";
    case Overflow::Reject: return "reject";
    case Overflow::DropLowest: return "drop_lowest";
  }
  return "?";
}

Overflow parse_overflow(const std::string& name, const char* arg) {
  for (Overflow o : {Overflow::Block, Overflow::Reject, Overflow::DropLowest}) {
    if (name == overflow_name(o)) return o;
  }
  fail(ErrorKind::Value, arg, ": unknown overflow policy '", name, "'; known: block, reject, drop_lowest");
}

PriorityQueue::PriorityQueue(const QueueOptions& options)
    : options_(options),
      best_(&best_pos_),
      worst_(&worst_pos_),
      track_worst_(options.overflow == Overflow::DropLowest),
      version_(options.version),
      age_boost_(options.age_boost) {
  PANGU_CHECK(options.capacity >= 1 && options.capacity <= kUnbounded, Value,
              "capacity: expected None or an integer in [1, ", kUnbounded, "], got ", options.capacity);
  PANGU_CHECK(std::isfinite(options.age_boost) && options.age_boost >= 0.0, Value,
              "age_boost: expected a finite number >= 0, got ", options.age_boost);
  stats_.capacity = options.capacity;
}

bool PriorityQueue::stale_locked(int64_t version) const {
  // version < version_ - s, written so that it cannot overflow.
  return options_.max_staleness >= 0 && version < version_ &&
         static_cast<uint64_t>(version_) - static_cast<uint64_t>(version) >
             static_cast<uint64_t>(options_.max_staleness);
}

void PriorityQueue::check_put_args(double priority, int64_t version, const char* where) const {
  PANGU_CHECK(std::isfinite(priority), Value, where, "priority: expected a finite number, got ", priority);
  PANGU_CHECK(version <= version_, Value, where, "version: expected <= the queue's current version ",
              version_, " (advance_version first), got ", version);
}

uint32_t PriorityQueue::alloc_slot_locked() {
  if (!free_slots_.empty()) {
    uint32_t slot = free_slots_.back();
    free_slots_.pop_back();
    return slot;
  }
  slots_.push_back(Slot{0, 0.0, 0, 0, false});
  best_pos_.push_back(0);
  worst_pos_.push_back(0);
  return static_cast<uint32_t>(slots_.size() - 1);
}

void PriorityQueue::insert_locked(Payload payload, double priority, int64_t version,
                                  std::vector<Payload>& handed_back) {
  if (stale_locked(version)) {
    ++stats_.rejected;
    handed_back.push_back(payload);
    return;
  }
  // Every item that is not rejected counts as put, also a new one DropLowest refuses at once, so
  // that put = got + evicted + dropped + size holds under every overflow policy.
  ++stats_.put;
  const double key = key_of(priority, version);
  if (!has_room_locked()) {
    // Only DropLowest gets here: the others wait or refuse before inserting.
    HeapEntry incoming{key, next_seq_, 0};
    ++stats_.dropped;
    if (!WorstFirst::before(worst_.top(), incoming)) {
      handed_back.push_back(payload);
      return;
    }
    uint32_t victim = worst_.top().slot;
    handed_back.push_back(slots_[victim].payload);
    remove_slot_locked(victim);
  }
  uint32_t slot = alloc_slot_locked();
  Slot& s = slots_[slot];
  s.payload = payload;
  s.priority = priority;
  s.version = version;
  s.live = true;
  HeapEntry entry{key, next_seq_++, slot};
  best_.push(entry);
  if (track_worst_) worst_.push(entry);
}

void PriorityQueue::remove_slot_locked(uint32_t slot) {
  best_.erase_at(best_pos_[slot]);
  if (track_worst_) worst_.erase_at(worst_pos_[slot]);
  Slot& s = slots_[slot];
  s.live = false;
  ++s.generation;
  free_slots_.push_back(slot);
}

Payload PriorityQueue::pop_best_locked() {
  uint32_t slot = best_.top().slot;
  const Slot& s = slots_[slot];
  Payload payload = s.payload;
  int64_t age = version_ - s.version;
  if (age > stats_.max_age_at_pop) stats_.max_age_at_pop = age;
  ++stats_.got;
  remove_slot_locked(slot);
  return payload;
}

void PriorityQueue::take_best_locked(size_t take, std::vector<Payload>& out) {
  const size_t n = best_.size();
  out.reserve(out.size() + take);
  if (take < 64 || take * 4 < n) {
    for (size_t i = 0; i < take; ++i) out.push_back(pop_best_locked());
    return;
  }
  // Taking a large share: one selection, a sort of the taken part and an O(n) rebuild of the rest
  // cost less than `take` pops that each walk the whole height of the heap.
  std::vector<HeapEntry> all;
  all.swap(best_.entries());
  auto before = [](const HeapEntry& a, const HeapEntry& b) { return BestFirst::before(a, b); };
  if (take < n) std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(take), all.end(), before);
  std::sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(take), before);
  for (size_t i = 0; i < take; ++i) {
    Slot& s = slots_[all[i].slot];
    out.push_back(s.payload);
    const int64_t age = version_ - s.version;
    if (age > stats_.max_age_at_pop) stats_.max_age_at_pop = age;
    s.live = false;
    ++s.generation;
    free_slots_.push_back(all[i].slot);
  }
  stats_.got += take;
  all.erase(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(take));
  if (track_worst_) {
    std::vector<HeapEntry> copy(all);
    worst_.rebuild_from(std::move(copy));
  }
  best_.rebuild_from(std::move(all));
}

void PriorityQueue::rebuild_locked() {
  // Re-keys every entry from its slot and restores both heaps in O(n).
  for (size_t pos = 0; pos < best_.size(); ++pos) {
    const Slot& s = slots_[best_.at(pos).slot];
    best_.set_key_unordered(pos, key_of(s.priority, s.version));
  }
  best_.heapify();
  if (track_worst_) {
    worst_.clear();
    for (size_t pos = 0; pos < best_.size(); ++pos) worst_.append_unordered(best_.at(pos));
    worst_.heapify();
  }
}

// notify_one where one item or one free place can satisfy at most one waiter; notify_all when
// several can, and whenever a consumer waits for a batch (min_n > 1): it may need more than the
// one item at hand, so a single wake-up could land on it and be lost for the others.
void PriorityQueue::wake_producers_locked(size_t freed) {
  if (waiting_producers_ == 0 || freed == 0) return;
  if (freed == 1) {
    not_full_.notify_one();
  } else {
    not_full_.notify_all();
  }
}

void PriorityQueue::wake_consumers_locked(size_t added) {
  if (waiting_consumers_ == 0 || added == 0) return;
  if (added == 1 && waiting_batch_consumers_ == 0) {
    not_empty_.notify_one();
  } else {
    not_empty_.notify_all();
  }
}

template <typename Ready>
bool PriorityQueue::wait_locked(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                                const Clock::time_point* deadline, size_t& waiting,
                                double& wait_total, Ready ready) {
  const auto start = Clock::now();
  ++waiting;
  bool ok = true;
  if (deadline == nullptr) {
    cv.wait(lock, ready);
  } else {
    ok = cv.wait_until(lock, *deadline, ready);
  }
  --waiting;
  wait_total += std::chrono::duration<double>(Clock::now() - start).count();
  return ok;
}

void PriorityQueue::put(Payload payload, double priority, int64_t version, double timeout_s,
                        std::vector<Payload>& handed_back, WaitHooks* hooks) {
  check_timeout(timeout_s);
  std::optional<HookGuard> guard;
  std::unique_lock<std::mutex> lock(mutex_);
  PANGU_CHECK(!closed_, QueueClosed, "put: the queue is closed");
  if (version == kCurrentVersion) version = version_;
  check_put_args(priority, version, "");
  if (!has_room_locked() && !stale_locked(version)) {
    if (options_.overflow == Overflow::Reject) {
      ++stats_.rejected;
      fail(ErrorKind::QueueFull, "put: the queue is full (capacity ", options_.capacity,
           ", overflow policy 'reject')");
    }
    if (options_.overflow == Overflow::Block) {
      auto deadline = deadline_after(timeout_s);
      PANGU_CHECK(timeout_s > 0.0, Timeout, "put: the queue is full and timeout is 0");
      enter_wait(lock, guard, hooks);
      bool ok = wait_locked(lock, not_full_, deadline ? &*deadline : nullptr, waiting_producers_,
                            stats_.producer_wait_s, [this] { return closed_ || has_room_locked(); });
      PANGU_CHECK(ok, Timeout, "put: timed out after ", timeout_s, " s waiting for room in the queue");
      PANGU_CHECK(!closed_, QueueClosed, "put: the queue was closed while waiting for room");
      // The version may have advanced while waiting; the item may be stale now (handed back).
    }
  }
  const size_t before = best_.size();
  insert_locked(payload, priority, version, handed_back);
  wake_consumers_locked(best_.size() > before ? 1 : 0);
}

void PriorityQueue::put_many(const Payload* payloads, const double* priorities, const int64_t* versions,
                             size_t n, double timeout_s, std::vector<Payload>& handed_back,
                             size_t& processed, WaitHooks* hooks) {
  processed = 0;
  check_timeout(timeout_s);
  for (size_t i = 0; i < n; ++i) {
    PANGU_CHECK(std::isfinite(priorities[i]), Value, "priorities[", i, "]: expected a finite number, got ",
                priorities[i]);
  }
  std::optional<HookGuard> guard;
  std::unique_lock<std::mutex> lock(mutex_);
  PANGU_CHECK(!closed_, QueueClosed, "put_many: the queue is closed");
  if (versions != nullptr) {
    for (size_t i = 0; i < n; ++i) {
      PANGU_CHECK(versions[i] <= version_, Value, "versions[", i, "]: expected <= the queue's current version ",
                  version_, " (advance_version first), got ", versions[i]);
    }
  }
  if (options_.overflow == Overflow::Reject) {
    size_t fresh = 0;
    for (size_t i = 0; i < n; ++i) fresh += stale_locked(versions ? versions[i] : version_) ? 0 : 1;
    if (best_.size() + fresh > options_.capacity) {
      stats_.rejected += fresh;
      fail(ErrorKind::QueueFull, "put_many: ", fresh, " items do not fit (", best_.size(), " of ",
           options_.capacity, " taken, overflow policy 'reject'); none were put");
    }
  }
  std::optional<Clock::time_point> deadline;
  bool have_deadline = false;
  while (processed < n) {
    // Versions were checked against the version at entry; the queue's only moves forward.
    const int64_t version = versions ? versions[processed] : version_;
    if (options_.overflow == Overflow::Block && !has_room_locked() && !stale_locked(version)) {
      wake_consumers_locked(best_.size());
      if (!have_deadline) {
        deadline = deadline_after(timeout_s);
        have_deadline = true;
      }
      PANGU_CHECK(timeout_s > 0.0, Timeout, "put_many: the queue is full and timeout is 0 (", processed,
                  " of ", n, " items were put)");
      enter_wait(lock, guard, hooks);
      bool ok = wait_locked(lock, not_full_, deadline ? &*deadline : nullptr, waiting_producers_,
                            stats_.producer_wait_s, [this] { return closed_ || has_room_locked(); });
      PANGU_CHECK(ok, Timeout, "put_many: timed out after ", timeout_s, " s waiting for room (", processed,
                  " of ", n, " items were put)");
      PANGU_CHECK(!closed_, QueueClosed, "put_many: the queue was closed while waiting for room (",
                  processed, " of ", n, " items were put)");
    }
    insert_locked(payloads[processed], priorities[processed], version, handed_back);
    ++processed;
  }
  // Items taken out by drop_lowest were replaced one for one; what counts is that some arrived.
  wake_consumers_locked(n > 1 ? best_.size() : 1);
}

Payload PriorityQueue::get(double timeout_s, WaitHooks* hooks) {
  check_timeout(timeout_s);
  std::optional<HookGuard> guard;
  std::unique_lock<std::mutex> lock(mutex_);
  if (best_.empty()) {
    PANGU_CHECK(!closed_, QueueClosed, "get: the queue is closed and drained");
    PANGU_CHECK(timeout_s > 0.0, Timeout, "get: the queue is empty and timeout is 0");
    auto deadline = deadline_after(timeout_s);
    enter_wait(lock, guard, hooks);
    bool ok = wait_locked(lock, not_empty_, deadline ? &*deadline : nullptr, waiting_consumers_,
                          stats_.consumer_wait_s, [this] { return closed_ || !best_.empty(); });
    PANGU_CHECK(ok, Timeout, "get: timed out after ", timeout_s, " s waiting for an item");
    PANGU_CHECK(!best_.empty(), QueueClosed, "get: the queue is closed and drained");
  }
  Payload payload = pop_best_locked();
  wake_producers_locked(1);
  return payload;
}

void PriorityQueue::get_batch(size_t n, size_t min_n, double timeout_s, std::vector<Payload>& out,
                              WaitHooks* hooks) {
  PANGU_CHECK(n >= 1, Value, "n: expected an integer >= 1, got ", n);
  PANGU_CHECK(min_n >= 1 && min_n <= n, Value, "min_n: expected an integer in [1, n=", n, "], got ", min_n);
  check_timeout(timeout_s);
  std::optional<HookGuard> guard;
  std::unique_lock<std::mutex> lock(mutex_);
  if (best_.size() < min_n && !closed_) {
    PANGU_CHECK(min_n <= options_.capacity, Value, "min_n: expected <= capacity ", options_.capacity,
                ", got ", min_n);
    PANGU_CHECK(timeout_s > 0.0, Timeout, "get_batch: ", best_.size(), " items queued, fewer than min_n=",
                min_n, ", and timeout is 0");
    auto deadline = deadline_after(timeout_s);
    enter_wait(lock, guard, hooks);
    if (min_n > 1) ++waiting_batch_consumers_;
    bool ok = wait_locked(lock, not_empty_, deadline ? &*deadline : nullptr, waiting_consumers_,
                          stats_.consumer_wait_s, [this, min_n] { return closed_ || best_.size() >= min_n; });
    if (min_n > 1) --waiting_batch_consumers_;
    PANGU_CHECK(ok, Timeout, "get_batch: timed out after ", timeout_s, " s waiting for min_n=", min_n,
                " items (", best_.size(), " queued)");
  }
  PANGU_CHECK(!best_.empty(), QueueClosed, "get_batch: the queue is closed and drained");
  const size_t take = n < best_.size() ? n : best_.size();
  take_best_locked(take, out);
  wake_producers_locked(take);
}

std::vector<Payload> PriorityQueue::advance_version(int64_t version) {
  std::vector<Payload> evicted;
  std::lock_guard<std::mutex> lock(mutex_);
  PANGU_CHECK(version >= version_, Value, "version: expected >= the current version ", version_,
              " (versions never go back), got ", version);
  version_ = version;
  if (options_.max_staleness < 0) return evicted;
  size_t stale = 0;
  for (size_t pos = 0; pos < best_.size(); ++pos) stale += stale_locked(slots_[best_.at(pos).slot].version);
  if (stale == 0) return evicted;
  evicted.reserve(stale);
  // Keep the survivors (their entries keep their seq) and rebuild both heaps in O(n).
  std::vector<HeapEntry> keep;
  keep.reserve(best_.size());
  for (size_t pos = 0; pos < best_.size(); ++pos) {
    const HeapEntry& e = best_.at(pos);
    Slot& s = slots_[e.slot];
    if (stale_locked(s.version)) {
      evicted.push_back(s.payload);
      s.live = false;
      ++s.generation;
      free_slots_.push_back(e.slot);
    } else {
      keep.push_back(e);
    }
  }
  best_.clear();
  for (const HeapEntry& e : keep) best_.append_unordered(e);
  rebuild_locked();
  stats_.evicted += evicted.size();
  wake_producers_locked(evicted.size());
  return evicted;
}

size_t PriorityQueue::update_priorities(const uint64_t* ids, const double* priorities, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    PANGU_CHECK(std::isfinite(priorities[i]), Value, "priorities[", i, "]: expected a finite number, got ",
                priorities[i]);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  // Many updates: set every key, then one O(n) rebuild; few: re-key each in O(log n).
  const bool bulk = n > best_.size() / 8;
  size_t updated = 0;
  for (size_t i = 0; i < n; ++i) {
    uint64_t slot = ids[i] & 0xffffffffu;
    uint32_t generation = static_cast<uint32_t>(ids[i] >> 32);
    if (slot >= slots_.size()) continue;
    Slot& s = slots_[slot];
    if (!s.live || s.generation != generation) continue;
    s.priority = priorities[i];
    ++updated;
    if (!bulk) {
      double key = key_of(s.priority, s.version);
      best_.rekey_at(best_pos_[slot], key);
      if (track_worst_) worst_.rekey_at(worst_pos_[slot], key);
    }
  }
  if (bulk && updated > 0) rebuild_locked();
  return updated;
}

void PriorityQueue::set_age_boost(double age_boost) {
  PANGU_CHECK(std::isfinite(age_boost) && age_boost >= 0.0, Value,
              "age_boost: expected a finite number >= 0, got ", age_boost);
  std::lock_guard<std::mutex> lock(mutex_);
  age_boost_ = age_boost;
  rebuild_locked();
}

void PriorityQueue::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  not_empty_.notify_all();
  not_full_.notify_all();
}

std::vector<Payload> PriorityQueue::drain() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Payload> out;
  out.reserve(best_.size());
  while (!best_.empty()) {
    uint32_t slot = best_.top().slot;
    out.push_back(slots_[slot].payload);
    remove_slot_locked(slot);
  }
  wake_producers_locked(out.size());
  return out;
}

QueueSnapshot PriorityQueue::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  QueueSnapshot snap;
  const size_t n = best_.size();
  snap.payloads.reserve(n);
  snap.ids.reserve(n);
  snap.priorities.reserve(n);
  snap.versions.reserve(n);
  snap.effective.reserve(n);
  for (size_t pos = 0; pos < n; ++pos) {
    uint32_t slot = best_.at(pos).slot;
    const Slot& s = slots_[slot];
    snap.payloads.push_back(s.payload);
    snap.ids.push_back((static_cast<uint64_t>(s.generation) << 32) | slot);
    snap.priorities.push_back(s.priority);
    snap.versions.push_back(s.version);
    snap.effective.push_back(s.priority + age_boost_ * static_cast<double>(version_ - s.version));
  }
  return snap;
}

QueueStats PriorityQueue::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  QueueStats out = stats_;
  out.size = best_.size();
  out.version = version_;
  out.closed = closed_;
  out.waiting_producers = waiting_producers_;
  out.waiting_consumers = waiting_consumers_;
  return out;
}

size_t PriorityQueue::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return best_.size();
}

bool PriorityQueue::closed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return closed_;
}

int64_t PriorityQueue::version() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return version_;
}

double PriorityQueue::age_boost() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return age_boost_;
}

}  // namespace pangu::queue
