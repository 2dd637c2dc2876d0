// Versioned weight store: a learner publishes a state dict as one version, flattened into
// contiguous buckets by multi-threaded copies (optionally cast, e.g. fp32 master -> bf16 rollout
// copy; see flat_layout.h); a ring of K versions lives in heap memory (one process) or in a POSIX shared-memory
// segment (every process on the host); readers copy a version straight into an existing model's
// parameters, in place, with no allocation in steady state.
//
// Consistency (a torn version is never seen):
//   - one writer (the publisher) per store; readers are any number of threads and processes;
//   - every ring slot has a sequence number, odd while the writer fills it (a seqlock), and a
//     claim flag the writer raises before it looks at the slot;
//   - a reader pins the slot it copies from with a lease (the per-slot reference count is the
//     number of leases naming the slot). The writer claims a slot, then scans the leases; the
//     reader takes a lease, then reads the claim. Both use sequentially consistent atomics, so
//     either the writer sees the lease (drops the claim, picks another slot or waits) or the
//     reader sees the claim (and retries): a pinned slot is never written, and the sequence
//     number changes only when a slot really is rewritten;
//   - after the copy the reader checks that the sequence number did not change (generation check);
//   - leases of dead processes are reclaimed by the writer, so a crashed reader never blocks it.
//   The newest version is never overwritten, so the writer always has a free slot unless readers
//   pin all K - 1 others; it then waits (bounded by a timeout).
// Peer loss: readers of a shared store check that the owner process is alive (pid + start time)
// and has not closed the store before each copy, and get ErrorKind::PeerLost otherwise.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/tensor_view.h"
#include "sync/flat_layout.h"
#include "sync/shm_segment.h"

namespace pangu {

// The ring of versions. Create one as the publisher (heap or shared memory); open a shared one by
// name as a reader. All methods are thread-safe; publish() calls are serialised.
class WeightStore {
 public:
  // In-process store with `slots` (>= 2) versions. `layout_text` is opaque metadata readers can
  // fetch (pangu_core stores the tensor names, shapes and dtypes as JSON there).
  static std::shared_ptr<WeightStore> create_heap(const FlatLayout& layout, int slots, const std::string& layout_text,
                                                  int max_leases = 256);
  // Shared-memory store owned by this process, segment `name` (see shm_segment.h for naming).
  static std::shared_ptr<WeightStore> create_shared(const std::string& name, const FlatLayout& layout, int slots,
                                                    const std::string& layout_text, int max_leases = 256);
  // Maps the shared store `name` as a reader. PeerLost if it is gone or its owner died.
  static std::shared_ptr<WeightStore> open_shared(const std::string& name);
  ~WeightStore();

  // Publishes `tensors` (in layout order) as `version` (> every earlier version; -1 means
  // latest + 1, or 0 for the first). Blocks at most timeout_s (< 0: forever) while readers pin
  // every free slot; TimeoutError then. Returns the version published.
  int64_t publish(const std::vector<TensorView>& tensors, int64_t version, double timeout_s);

  // Copies a version into `tensors` in place and returns its number. version >= 0: exactly that
  // version (KeyError if the ring does not hold it, naming the versions it holds); version < 0:
  // the newest, waiting up to timeout_s (< 0: forever) until one >= min_version exists
  // (TimeoutError). `flat_out`, if non-null, also receives the raw flat bytes.
  int64_t pull(const std::vector<TensorView>& tensors, int64_t version, int64_t min_version, double timeout_s,
               uint8_t* flat_out = nullptr);

  // Holds a version in the ring (the writer will not overwrite it) until unpin(); returns
  // {lease, version}. version < 0 pins the newest. KeyError / TimeoutError like pull(). A process
  // that dies holding a pin loses it at the writer's next look.
  struct Pin {
    int lease;
    int64_t version;
    uint64_t seq;  // the slot's sequence number when pinned (for the generation check)
  };
  Pin pin(int64_t version, double timeout_s);
  void unpin(int lease);

  // Blocks until a version >= min_version exists; returns the newest. TimeoutError / PeerLost.
  int64_t wait_version(int64_t min_version, double timeout_s);

  // Newest published version, -1 if none yet.
  int64_t latest_version() const;
  // Versions the ring holds now, oldest first.
  std::vector<int64_t> versions() const;
  // Leases currently naming a slot holding `version` (its reference count), 0 if not held.
  int64_t pin_count(int64_t version) const;

  const FlatLayout& layout() const { return *layout_; }
  int slots() const;
  int64_t slot_bytes() const;
  std::string layout_text() const;
  bool is_owner() const { return owner_; }
  std::string name() const { return segment_.name(); }
  int64_t owner_pid() const;

  // Owner: marks the store closed (readers get PeerLost from then on) and unlinks the shared
  // segment's name. The memory itself is released with the object, so readers in this process
  // that still hold it never touch freed memory.
  void close();

  struct Header;
  struct Slot;
  struct Lease;

 private:
  WeightStore() = default;
  void init_owner(const FlatLayout& layout, int slots, const std::string& layout_text, int max_leases);
  void attach(uint8_t* base, size_t size);
  void check_peer() const;
  int take_lease(int slot);
  void drop_lease(int lease);
  bool slot_leased(int slot) const;
  uint8_t* slot_data(int slot) const;

  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  Header* header_ = nullptr;
  Slot* slots_ = nullptr;
  Lease* leases_ = nullptr;
  std::unique_ptr<FlatLayout> layout_;
  void* heap_block_ = nullptr;
  ShmSegment segment_;
  bool owner_ = false;
  std::mutex publish_mutex_;
};

}  // namespace pangu
