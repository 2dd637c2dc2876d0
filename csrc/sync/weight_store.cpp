#include "sync/weight_store.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace pangu {

namespace {
constexpr int64_t kAlign = 64;
constexpr int64_t kPage = 4096;
constexpr uint64_t kMagic = 0x70616e6775575354ull;  // "panguWST"
constexpr uint32_t kFormat = 1;

int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Polling backoff for waits that cross processes (no shared condition variable there).
void backoff(int& round) {
  if (round < 64) {
    std::this_thread::yield();
  } else {
    int micros = std::min(1000, 20 << std::min(6, (round - 64) / 16));
    std::this_thread::sleep_for(std::chrono::microseconds(micros));
  }
  ++round;
}

uint64_t pack_latest(int64_t version, int slot) { return (static_cast<uint64_t>(version + 1) << 8) | static_cast<uint64_t>(slot); }
int64_t latest_of(uint64_t packed) { return static_cast<int64_t>(packed >> 8) - 1; }
int slot_of(uint64_t packed) { return static_cast<int>(packed & 0xff); }

}  // namespace

struct WeightStore::Header {
  uint64_t magic;
  uint32_t format;
  int32_t slots;
  int32_t max_leases;
  int32_t pad0;
  int64_t slot_bytes;
  int64_t data_offset;
  int64_t layout_offset, layout_size;
  int64_t text_offset, text_size;
  int64_t bucket_bytes;
  int64_t num_tensors;
  int64_t owner_pid;
  uint64_t owner_start;
  alignas(64) std::atomic<uint64_t> latest;  // pack_latest(version, slot); 0 = nothing yet
  std::atomic<uint32_t> closed;
};

struct WeightStore::Slot {
  alignas(64) std::atomic<uint64_t> seq;  // odd while the writer fills the slot
  std::atomic<int64_t> version;
  std::atomic<uint32_t> claimed;          // the writer is looking at (or filling) the slot
};

struct WeightStore::Lease {
  alignas(64) std::atomic<int64_t> pid;  // 0 = free
  std::atomic<uint64_t> start;
  std::atomic<int32_t> slot;             // -1 = pins nothing
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "cross-process atomics must be lock-free");
static_assert(std::atomic<int64_t>::is_always_lock_free, "cross-process atomics must be lock-free");

namespace {
struct Sizes {
  int64_t layout_offset, text_offset, data_offset, slot_bytes, total;
};

Sizes plan(const FlatLayout& layout, int slots, int max_leases, int64_t layout_size, int64_t text_size,
           size_t header, size_t slot, size_t lease) {
  Sizes s;
  s.layout_offset = round_up(static_cast<int64_t>(header + slot * slots + lease * max_leases), kAlign);
  s.text_offset = s.layout_offset + layout_size;
  s.data_offset = round_up(s.text_offset + text_size, kPage);
  s.slot_bytes = round_up(std::max<int64_t>(layout.total_bytes(), 1), kPage);
  s.total = s.data_offset + s.slot_bytes * slots;
  return s;
}
}  // namespace

std::shared_ptr<WeightStore> WeightStore::create_heap(const FlatLayout& layout, int slots, const std::string& text,
                                                      int max_leases) {
  PANGU_CHECK(slots >= 2 && slots <= 255, Value, "slots: expected 2..255 versions in the ring, got ", slots);
  PANGU_CHECK(max_leases >= 1, Value, "max_leases: expected >= 1, got ", max_leases);
  std::string blob = encode_layout(layout);
  Sizes s = plan(layout, slots, max_leases, static_cast<int64_t>(blob.size()), static_cast<int64_t>(text.size()),
                 sizeof(Header), sizeof(Slot), sizeof(Lease));
  std::shared_ptr<WeightStore> store(new WeightStore());
  void* p = std::aligned_alloc(kPage, static_cast<size_t>(s.total));
  PANGU_CHECK(p != nullptr, Runtime, "weight store: cannot allocate ", s.total, " bytes");
  store->heap_block_ = p;
  std::memset(p, 0, static_cast<size_t>(s.data_offset));
  store->attach(static_cast<uint8_t*>(p), static_cast<size_t>(s.total));
  store->owner_ = true;
  store->init_owner(layout, slots, text, max_leases);
  return store;
}

std::shared_ptr<WeightStore> WeightStore::create_shared(const std::string& name, const FlatLayout& layout, int slots,
                                                        const std::string& text, int max_leases) {
  PANGU_CHECK(slots >= 2 && slots <= 255, Value, "slots: expected 2..255 versions in the ring, got ", slots);
  PANGU_CHECK(max_leases >= 1, Value, "max_leases: expected >= 1, got ", max_leases);
  std::string blob = encode_layout(layout);
  Sizes s = plan(layout, slots, max_leases, static_cast<int64_t>(blob.size()), static_cast<int64_t>(text.size()),
                 sizeof(Header), sizeof(Slot), sizeof(Lease));
  std::shared_ptr<WeightStore> store(new WeightStore());
  store->segment_ = ShmSegment::create(name, static_cast<size_t>(s.total));  // zero-filled by the kernel
  store->attach(static_cast<uint8_t*>(store->segment_.data()), store->segment_.size());
  store->owner_ = true;
  store->init_owner(layout, slots, text, max_leases);
  return store;
}

void WeightStore::attach(uint8_t* base, size_t size) {
  base_ = base;
  size_ = size;
  header_ = reinterpret_cast<Header*>(base);
  slots_ = reinterpret_cast<Slot*>(base + sizeof(Header));
}

void WeightStore::init_owner(const FlatLayout& layout, int slots, const std::string& text, int max_leases) {
  std::string blob = encode_layout(layout);
  Sizes s = plan(layout, slots, max_leases, static_cast<int64_t>(blob.size()), static_cast<int64_t>(text.size()),
                 sizeof(Header), sizeof(Slot), sizeof(Lease));
  Header* h = header_;
  h->format = kFormat;
  h->slots = slots;
  h->max_leases = max_leases;
  h->slot_bytes = s.slot_bytes;
  h->data_offset = s.data_offset;
  h->layout_offset = s.layout_offset;
  h->layout_size = static_cast<int64_t>(blob.size());
  h->text_offset = s.text_offset;
  h->text_size = static_cast<int64_t>(text.size());
  h->bucket_bytes = layout.bucket_limit();
  h->num_tensors = static_cast<int64_t>(layout.entries().size());
  h->owner_pid = getpid();
  h->owner_start = process_start_time(h->owner_pid);
  leases_ = reinterpret_cast<Lease*>(base_ + sizeof(Header) + sizeof(Slot) * static_cast<size_t>(slots));
  for (int i = 0; i < slots; ++i) {
    slots_[i].seq.store(0);
    slots_[i].version.store(-1);
    slots_[i].claimed.store(0);
  }
  for (int i = 0; i < max_leases; ++i) {
    leases_[i].pid.store(0);
    leases_[i].slot.store(-1);
  }
  std::memcpy(base_ + s.layout_offset, blob.data(), blob.size());
  std::memcpy(base_ + s.text_offset, text.data(), text.size());
  layout_ = std::make_unique<FlatLayout>(layout);
  header_->latest.store(0);
  header_->closed.store(0);
  // Readers in other processes trust the store once the magic is there.
  std::atomic_thread_fence(std::memory_order_release);
  reinterpret_cast<std::atomic<uint64_t>*>(&h->magic)->store(kMagic, std::memory_order_release);
}

std::shared_ptr<WeightStore> WeightStore::open_shared(const std::string& name) {
  std::shared_ptr<WeightStore> store(new WeightStore());
  store->segment_ = ShmSegment::open(name);
  PANGU_CHECK(store->segment_.size() >= sizeof(Header), PeerLost, "shared weight store '", name, "' is truncated");
  store->attach(static_cast<uint8_t*>(store->segment_.data()), store->segment_.size());
  Header* h = store->header_;
  uint64_t magic = reinterpret_cast<std::atomic<uint64_t>*>(&h->magic)->load(std::memory_order_acquire);
  PANGU_CHECK(magic == kMagic, PeerLost, "shared weight store '", name,
              "' is not initialised (its publisher died while creating it, or it is not a weight store)");
  PANGU_CHECK(h->format == kFormat, Value, "shared weight store '", name, "': format ", h->format,
              " is not the supported ", kFormat);
  PANGU_CHECK(static_cast<size_t>(h->data_offset + h->slot_bytes * h->slots) <= store->size_, PeerLost,
              "shared weight store '", name, "' is truncated");
  store->leases_ = reinterpret_cast<Lease*>(store->base_ + sizeof(Header) + sizeof(Slot) * static_cast<size_t>(h->slots));
  store->layout_ = std::make_unique<FlatLayout>(
      decode_layout(store->base_ + h->layout_offset, h->layout_size, h->num_tensors, h->bucket_bytes));
  store->check_peer();
  return store;
}

WeightStore::~WeightStore() {
  // Acquire what every reader released last (its lease) so that freeing the ring is ordered
  // after all of their copies, also for tools that cannot see the caller's own synchronisation.
  if (header_ && leases_) {
    for (int i = 0; i < header_->max_leases; ++i) (void)leases_[i].pid.load(std::memory_order_acquire);
  }
  { std::lock_guard<std::mutex> lock(publish_mutex_); }
  close();
  segment_.close();
  std::free(heap_block_);
}

void WeightStore::close() {
  if (!owner_ || !header_) return;
  std::lock_guard<std::mutex> lock(publish_mutex_);
  header_->closed.store(1);
  segment_.unlink();
}

void WeightStore::check_peer() const {
  PANGU_CHECK(header_->closed.load() == 0, PeerLost, "weight store '", segment_.name(),
              "': the publisher closed it (pid ", header_->owner_pid, ")");
  if (!owner_) {
    PANGU_CHECK(process_alive(header_->owner_pid, header_->owner_start), PeerLost, "weight store '",
                segment_.name(), "': the publisher process ", header_->owner_pid, " died");
  }
}

uint8_t* WeightStore::slot_data(int slot) const {
  return base_ + header_->data_offset + header_->slot_bytes * static_cast<int64_t>(slot);
}

int WeightStore::slots() const { return header_ ? header_->slots : 0; }
int64_t WeightStore::slot_bytes() const { return header_ ? header_->slot_bytes : 0; }
int64_t WeightStore::owner_pid() const { return header_ ? header_->owner_pid : 0; }

std::string WeightStore::layout_text() const {
  check_peer();
  return std::string(reinterpret_cast<const char*>(base_ + header_->text_offset),
                     static_cast<size_t>(header_->text_size));
}

int64_t WeightStore::latest_version() const {
  check_peer();
  return latest_of(header_->latest.load());
}

std::vector<int64_t> WeightStore::versions() const {
  check_peer();
  std::vector<int64_t> out;
  for (int i = 0; i < header_->slots; ++i) {
    uint64_t seq = slots_[i].seq.load();
    int64_t v = slots_[i].version.load();
    if (seq % 2 == 0 && v >= 0) out.push_back(v);
  }
  std::sort(out.begin(), out.end());
  return out;
}

int64_t WeightStore::pin_count(int64_t version) const {
  check_peer();
  int64_t count = 0;
  for (int i = 0; i < header_->max_leases; ++i) {
    int32_t s = leases_[i].slot.load();
    if (leases_[i].pid.load() != 0 && s >= 0 && slots_[s].version.load() == version) ++count;
  }
  return count;
}

bool WeightStore::slot_leased(int slot) const {
  int64_t self = getpid();
  for (int i = 0; i < header_->max_leases; ++i) {
    if (leases_[i].slot.load() != slot) continue;
    int64_t pid = leases_[i].pid.load();
    if (pid == 0) continue;
    if (pid != self && !process_alive(pid, leases_[i].start.load())) {
      // A reader died holding the lease: reclaim it so that it never blocks publication.
      int64_t expected = pid;
      if (leases_[i].pid.compare_exchange_strong(expected, -1)) {
        leases_[i].slot.store(-1);
        leases_[i].pid.store(0);
      }
      continue;
    }
    return true;
  }
  return false;
}

int WeightStore::take_lease(int slot) {
  int64_t self = getpid();
  static thread_local uint64_t self_start = 0;
  static thread_local int64_t self_start_pid = 0;
  if (self_start_pid != self) {
    self_start = process_start_time(self);
    self_start_pid = self;
  }
  int n = header_->max_leases;
  // Start the scan at a per-thread offset so that concurrent readers rarely collide.
  int first = static_cast<int>(std::hash<std::thread::id>()(std::this_thread::get_id()) % static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) {
    int i = (first + k) % n;
    int64_t expected = 0;
    if (leases_[i].pid.load() == 0 && leases_[i].pid.compare_exchange_strong(expected, self)) {
      leases_[i].start.store(self_start);
      leases_[i].slot.store(slot);
      return i;
    }
  }
  return -1;
}

void WeightStore::drop_lease(int lease) {
  leases_[lease].slot.store(-1);
  leases_[lease].pid.store(0);
}

int64_t WeightStore::publish(const std::vector<TensorView>& tensors, int64_t version, double timeout_s) {
  PANGU_CHECK(owner_, Value, "publish: only the process that created the weight store may publish to it");
  std::lock_guard<std::mutex> lock(publish_mutex_);
  check_peer();
  uint64_t packed = header_->latest.load();
  int64_t latest = latest_of(packed);
  if (version < 0) version = latest + 1;
  PANGU_CHECK(version > latest, Value, "version: expected > ", latest, " (the newest published), got ", version);
  PANGU_CHECK(version < (int64_t{1} << 54), Value, "version: expected < 2^54, got ", version);
  FlatTensors source(*layout_, tensors, false);
  int keep = packed == 0 ? -1 : slot_of(packed);
  int n = header_->slots;
  auto start = std::chrono::steady_clock::now();
  int chosen = -1;
  for (int round = 0; chosen < 0;) {
    for (int k = 1; k <= n && chosen < 0; ++k) {
      int s = ((keep < 0 ? 0 : keep) + k) % n;
      if (s == keep) continue;
      slots_[s].claimed.store(1);  // readers that lease from now on back off
      if (slot_leased(s)) {
        slots_[s].claimed.store(0);  // untouched: its version stays readable
      } else {
        chosen = s;
      }
    }
    if (chosen >= 0) break;
    PANGU_CHECK(timeout_s < 0 || seconds_since(start) < timeout_s, Timeout, "publish: every free ring slot (",
                n - 1, " of ", n, ") stayed pinned by readers for ", timeout_s, " s");
    backoff(round);
  }
  uint64_t seq = slots_[chosen].seq.load();
  slots_[chosen].seq.store(seq + 1);
  slots_[chosen].version.store(version);
  try {
    source.to_flat(slot_data(chosen));
  } catch (...) {
    slots_[chosen].version.store(-1);  // half written: never readable
    slots_[chosen].seq.store(seq + 2);
    slots_[chosen].claimed.store(0);
    throw;
  }
  slots_[chosen].seq.store(seq + 2);
  header_->latest.store(pack_latest(version, chosen));
  slots_[chosen].claimed.store(0);
  return version;
}

int64_t WeightStore::wait_version(int64_t min_version, double timeout_s) {
  auto start = std::chrono::steady_clock::now();
  for (int round = 0;; backoff(round)) {
    if (round % 64 == 0) check_peer();
    int64_t latest = latest_of(header_->latest.load());
    if (latest >= 0 && latest >= min_version) return latest;
    PANGU_CHECK(timeout_s < 0 || seconds_since(start) < timeout_s, Timeout, "wait: no version >= ", min_version,
                " was published within ", timeout_s, " s (newest: ", latest, ")");
  }
}

WeightStore::Pin WeightStore::pin(int64_t version, double timeout_s) {
  check_peer();
  auto start = std::chrono::steady_clock::now();
  for (int round = 0;; backoff(round)) {
    int slot = -1;
    int64_t want = version;
    if (version >= 0) {
      for (int i = 0; i < header_->slots; ++i) {
        if (slots_[i].version.load() == version) slot = i;
      }
      if (slot < 0) {
        std::vector<int64_t> held = versions();
        std::string list;
        for (int64_t v : held) list += (list.empty() ? "" : ", ") + std::to_string(v);
        fail(ErrorKind::Key, "version: ", version, " is not in the ring (it holds ", list.empty() ? "nothing" : list,
             "; newest ", latest_of(header_->latest.load()), ")");
      }
    } else {
      uint64_t packed = header_->latest.load();
      if (packed == 0) {
        PANGU_CHECK(timeout_s < 0 || seconds_since(start) < timeout_s, Timeout, "pin: nothing was published within ",
                    timeout_s, " s");
        if (round % 64 == 0) check_peer();
        continue;
      }
      slot = slot_of(packed);
      want = latest_of(packed);
    }
    int lease = take_lease(slot);
    if (lease < 0) {
      PANGU_CHECK(timeout_s < 0 || seconds_since(start) < timeout_s, Timeout, "pin: all ", header_->max_leases,
                  " reader leases stayed taken for ", timeout_s, " s");
      continue;
    }
    bool claimed = slots_[slot].claimed.load() != 0;
    uint64_t seq = slots_[slot].seq.load();
    if (!claimed && seq % 2 == 0 && slots_[slot].version.load() == want) return {lease, want, seq};
    // The writer claimed the slot first (or moved on): try again with what is newest now.
    drop_lease(lease);
    if (version >= 0 && !claimed && seq % 2 == 0) {
      check_peer();
      fail(ErrorKind::Key, "version: ", version, " left the ring while being pinned (newest now ",
           latest_of(header_->latest.load()), ")");
    }
  }
}

void WeightStore::unpin(int lease) {
  PANGU_CHECK(lease >= 0 && lease < header_->max_leases && leases_[lease].pid.load() == getpid() &&
                  leases_[lease].slot.load() >= 0,
              Value, "lease: ", lease, " is not a pin held by this process");
  drop_lease(lease);
}

int64_t WeightStore::pull(const std::vector<TensorView>& tensors, int64_t version, int64_t min_version,
                          double timeout_s, uint8_t* flat_out) {
  check_peer();
  FlatTensors targets(*layout_, tensors, true);
  if (version < 0 && min_version >= 0) wait_version(min_version, timeout_s);
  for (;;) {
    auto [lease, got, seq] = pin(version, timeout_s);
    int slot = leases_[lease].slot.load();
    try {
      check_peer();
      targets.from_flat(slot_data(slot));
      if (flat_out) std::memcpy(flat_out, slot_data(slot), static_cast<size_t>(layout_->total_bytes()));
    } catch (...) {
      drop_lease(lease);
      throw;
    }
    uint64_t after = slots_[slot].seq.load();
    bool peer_ok = header_->closed.load() == 0;
    if (peer_ok && !owner_) peer_ok = process_alive(header_->owner_pid, header_->owner_start);
    drop_lease(lease);  // the last touch of the store's memory in this call
    // Generation check: the lease protocol makes this unreachable; it is the last line of defence
    // against handing out a torn version.
    PANGU_CHECK(after == seq, Runtime, "internal error: ring slot ", slot, " was rewritten while pinned");
    if (!peer_ok) check_peer();
    PANGU_CHECK(peer_ok, PeerLost, "weight store '", segment_.name(), "': the publisher went away during the copy");
    if (got >= min_version) return got;
  }
}

}  // namespace pangu
