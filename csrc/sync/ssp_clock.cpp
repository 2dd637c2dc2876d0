#include "sync/ssp_clock.h"

#include <algorithm>

#include "common/errors.h"

namespace pangu {

SSPClock::SSPClock(int64_t staleness, double heartbeat_timeout_s)
    : staleness_(staleness), heartbeat_timeout_s_(heartbeat_timeout_s) {
  PANGU_CHECK(staleness >= 0, Value, "staleness: expected >= 0, got ", staleness);
}

SSPClock::~SSPClock() { std::lock_guard<std::mutex> lock(mutex_); }

int64_t SSPClock::min_clock_locked() const {
  int64_t m = -1;
  for (const auto& [id, w] : live_) m = (m < 0 || w.clock < m) ? w.clock : m;
  return m;
}

std::vector<int64_t> SSPClock::reap_locked(Clock::time_point now) {
  std::vector<int64_t> gone;
  if (heartbeat_timeout_s_ <= 0) return gone;
  auto limit = std::chrono::duration<double>(heartbeat_timeout_s_);
  for (auto it = live_.begin(); it != live_.end();) {
    if (now - it->second.last_seen > limit) {
      gone.push_back(it->first);
      dead_[it->first] = true;
      it = live_.erase(it);
    } else {
      ++it;
    }
  }
  if (!gone.empty()) changed_.notify_all();
  return gone;
}

SSPClock::Worker& SSPClock::live_locked(int64_t id, const char* what) {
  PANGU_CHECK(!closed_, QueueClosed, what, ": the clock is closed");
  auto it = live_.find(id);
  if (it == live_.end()) {
    PANGU_CHECK(dead_.count(id) == 0, PeerLost, what, ": worker ", id,
                " was declared dead (missed heartbeats or removed explicitly)");
    fail(ErrorKind::Key, what, ": worker ", id, " has not joined");
  }
  return it->second;
}

int64_t SSPClock::join(int64_t id) {
  PANGU_CHECK(id >= 0, Value, "id: expected a worker id >= 0, got ", id);
  std::lock_guard<std::mutex> lock(mutex_);
  PANGU_CHECK(!closed_, QueueClosed, "join: the clock is closed");
  PANGU_CHECK(live_.count(id) == 0, Value, "id: worker ", id, " has already joined");
  int64_t start = live_.empty() ? std::max<int64_t>(version_, 0) : min_clock_locked();
  dead_.erase(id);
  live_[id] = Worker{start, Clock::now()};
  changed_.notify_all();
  return start;
}

void SSPClock::leave(int64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  live_locked(id, "leave");
  live_.erase(id);
  changed_.notify_all();
}

bool SSPClock::declare_dead(int64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(id);
  if (it == live_.end()) return false;
  live_.erase(it);
  dead_[id] = true;
  changed_.notify_all();
  return true;
}

void SSPClock::heartbeat(int64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  live_locked(id, "heartbeat").last_seen = Clock::now();
}

std::vector<int64_t> SSPClock::reap() {
  std::lock_guard<std::mutex> lock(mutex_);
  return reap_locked(Clock::now());
}

template <typename Ready>
void SSPClock::wait_locked(std::unique_lock<std::mutex>& lock, double timeout_s, Ready ready, int64_t id,
                           const std::string& what) {
  auto start = Clock::now();
  // Waiters wake at least this often to expire silent workers, so a crash never deadlocks them.
  auto poll = std::chrono::duration<double>(heartbeat_timeout_s_ > 0 ? std::min(0.05, heartbeat_timeout_s_ / 4) : 0.05);
  for (;;) {
    auto now = Clock::now();
    live_locked(id, what.c_str()).last_seen = now;  // a worker blocked here is alive
    reap_locked(now);
    if (ready()) return;
    std::chrono::duration<double> waited = now - start;
    if (timeout_s >= 0 && waited.count() >= timeout_s) {
      fail(ErrorKind::Timeout, what, ": worker ", id, " at clock ", live_.at(id).clock, " waited ", timeout_s,
           " s (slowest live clock ", min_clock_locked(), ", learner version ", version_, ", staleness ", staleness_,
           ")");
    }
    auto step = poll;
    if (timeout_s >= 0) step = std::min(step, std::chrono::duration<double>(timeout_s - waited.count()));
    changed_.wait_for(lock, step);
  }
}

int64_t SSPClock::tick(int64_t id, double timeout_s) {
  std::unique_lock<std::mutex> lock(mutex_);
  ++live_locked(id, "tick").clock;
  changed_.notify_all();
  wait_locked(lock, timeout_s, [&] { return live_.at(id).clock <= min_clock_locked() + staleness_; }, id, "tick");
  return live_.at(id).clock;
}

int64_t SSPClock::wait_turn(int64_t id, double timeout_s) {
  std::unique_lock<std::mutex> lock(mutex_);
  live_locked(id, "wait_turn");
  wait_locked(lock, timeout_s, [&] { return live_.at(id).clock <= min_clock_locked() + staleness_; }, id,
              "wait_turn");
  return live_.at(id).clock;
}

int64_t SSPClock::wait_version(int64_t id, double timeout_s) {
  std::unique_lock<std::mutex> lock(mutex_);
  live_locked(id, "wait_version");
  wait_locked(lock, timeout_s, [&] { return version_ >= required_version(live_.at(id).clock, staleness_); }, id,
              "wait_version");
  return version_;
}

void SSPClock::publish(int64_t version) {
  std::lock_guard<std::mutex> lock(mutex_);
  PANGU_CHECK(!closed_, QueueClosed, "publish: the clock is closed");
  PANGU_CHECK(version >= version_, Value, "version: expected >= ", version_, " (versions never go back), got ",
              version);
  version_ = version;
  changed_.notify_all();
}

int64_t SSPClock::version() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return version_;
}

int64_t SSPClock::clock(int64_t id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(id);
  PANGU_CHECK(it != live_.end(), Key, "id: worker ", id, dead_.count(id) ? " was declared dead" : " has not joined");
  return it->second.clock;
}

int64_t SSPClock::min_clock() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return min_clock_locked();
}

std::vector<int64_t> SSPClock::live_workers() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<int64_t> ids;
  for (const auto& [id, w] : live_) ids.push_back(id);
  return ids;
}

std::vector<int64_t> SSPClock::dead_workers() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<int64_t> ids;
  for (const auto& [id, d] : dead_) ids.push_back(id);
  return ids;
}

void SSPClock::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  changed_.notify_all();
}

bool SSPClock::closed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return closed_;
}

}  // namespace pangu
