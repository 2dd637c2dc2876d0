// POSIX shared-memory segments with owner bookkeeping, so that weight versions published by one
// process are readable by others on the same host without copies through the kernel.
//
// Naming: every segment of one run is called "/<prefix>.<owner pid>.<owner start time>.<tag>".
// The owner pid and its start time (from /proc, so a reused pid is not mistaken for the owner)
// let any process decide whether the run that made a segment is still alive:
//   - the owner unlinks its segments when the ShmSegment is destroyed, at normal exit, and from a
//     handler for fatal signals (SIGTERM, SIGHUP, SIGQUIT, SIGABRT, SIGSEGV, SIGBUS);
//   - SIGKILL cannot be caught, so sweep_dead_segments() removes segments whose owner is gone;
//   - a reader whose owner died gets ErrorKind::PeerLost (pangu_core.PeerLost), never garbage:
//     owner_alive() is checked by readers before and after each copy (see weight_store.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pangu {

// Start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), 0 if no such
// process. Together with the pid it identifies a process even when pids are reused.
uint64_t process_start_time(int64_t pid);

// True when `pid` is running and (if start_time != 0) started at `start_time`.
bool process_alive(int64_t pid, uint64_t start_time);

// The parts of a segment name made by segment_name(); valid == false for foreign names.
struct SegmentNameParts {
  bool valid = false;
  std::string prefix;
  int64_t pid = 0;
  uint64_t start_time = 0;
  std::string tag;
};

// "/<prefix>.<pid>.<start time>.<tag>" for this process. prefix and tag: [A-Za-z0-9_-]+, checked
// (ValueError naming the argument).
std::string segment_name(const std::string& prefix, const std::string& tag);
SegmentNameParts parse_segment_name(const std::string& name);

// A mapped POSIX shared-memory object. Movable, not copyable. Thread-safe to read the mapping
// from many threads; create/open/close are not meant to race with each other.
class ShmSegment {
 public:
  ShmSegment() = default;
  ~ShmSegment();
  ShmSegment(ShmSegment&& other) noexcept;
  ShmSegment& operator=(ShmSegment&& other) noexcept;
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  // Creates a new segment of `bytes` (> 0) named `name` ("/..."), zero-filled, owned by this
  // process: it is unlinked when this object is destroyed or on a fatal signal. Throws ValueError
  // if the name exists, RuntimeError (with errno text) if the system refuses.
  static ShmSegment create(const std::string& name, size_t bytes);
  // Maps an existing segment read-write. Throws PeerLost if it does not exist (its owner removed
  // it or never made it).
  static ShmSegment open(const std::string& name);

  void* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }
  bool is_owner() const { return owner_; }
  bool is_open() const { return data_ != nullptr; }

  // Unmaps; the owner also unlinks the name. Idempotent.
  void close();
  // Owner: removes the name now (no new process can open it) and keeps the mapping. Idempotent.
  void unlink();

 private:
  std::string name_;
  void* data_ = nullptr;
  size_t size_ = 0;
  bool owner_ = false;
};

// Removes every segment in /dev/shm named "<prefix>.<pid>.<start>.<tag>" whose owner is no
// longer alive. Returns the names removed. Segments of live runs and foreign names are kept.
std::vector<std::string> sweep_dead_segments(const std::string& prefix);

// Names of the segments in /dev/shm that start with "<prefix>." (for leak checks).
std::vector<std::string> list_segments(const std::string& prefix);

// Installs (once per process) handlers for SIGTERM, SIGHUP, SIGQUIT, SIGABRT, SIGSEGV and SIGBUS
// that unlink every segment this process owns and then re-raise the signal with the handler that
// was there before (so the process still dies the same way, and Python's own handlers keep
// working). SIGINT is left to Python: KeyboardInterrupt unwinds and the destructors unlink.
void install_cleanup_handlers();

}  // namespace pangu
