// An indexed 4-ary heap over queue slots: each slot knows where it sits in the heap, so an item in
// the middle can be removed or re-keyed in O(log n). Used twice by PriorityQueue: once ordered
// best-first (what get takes) and, for the drop_lowest policy only, once ordered worst-first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace pangu::queue {

// One heap entry. `key` is the time-invariant part of the effective priority (see priority_queue.h),
// `seq` the insertion sequence (smaller = older), `slot` the item's index in the slot table.
struct HeapEntry {
  double key;
  uint64_t seq;
  uint32_t slot;
};

// Best-first: higher key first, then older (smaller seq) first.
struct BestFirst {
  static bool before(const HeapEntry& a, const HeapEntry& b) {
    return a.key > b.key || (a.key == b.key && a.seq < b.seq);
  }
};

// Worst-first: the exact reverse of BestFirst (lower key first, then newer first).
struct WorstFirst {
  static bool before(const HeapEntry& a, const HeapEntry& b) {
    return (a.key < b.key) | ((a.key == b.key) & (a.seq > b.seq));
  }
};

// A 4-ary heap: half the levels of a binary heap, and the four children of a node sit side by side
// in memory (measured about even with a binary heap on pop-heavy loops, cheaper on O(n) rebuilds).
// `Order::before(a, b)` says a comes out before b. Positions are written into `positions[slot]`,
// a table owned by the caller (one per heap) and sized to the slot table.
// Not thread-safe: the owning queue serialises access.
template <typename Order>
class IndexedHeap {
 public:
  explicit IndexedHeap(std::vector<uint32_t>* positions) : positions_(positions) {}

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  const HeapEntry& top() const { return entries_.front(); }
  const HeapEntry& at(size_t pos) const { return entries_[pos]; }
  void reserve(size_t n) { entries_.reserve(n); }
  void clear() { entries_.clear(); }

  // O(log n).
  void push(const HeapEntry& e) {
    entries_.push_back(e);
    sift_up(entries_.size() - 1);
  }

  // Removes the entry at heap position `pos`; O(log n).
  void erase_at(size_t pos) {
    size_t last = entries_.size() - 1;
    if (pos != last) {
      entries_[pos] = entries_[last];
      (*positions_)[entries_[pos].slot] = static_cast<uint32_t>(pos);
      entries_.pop_back();
      restore(pos);
    } else {
      entries_.pop_back();
    }
  }

  // Changes the key of the entry at heap position `pos`; O(log n).
  void rekey_at(size_t pos, double key) {
    entries_[pos].key = key;
    restore(pos);
  }

  // Appends without ordering; call heapify() afterwards. For O(n) bulk rebuilds.
  void append_unordered(const HeapEntry& e) {
    (*positions_)[e.slot] = static_cast<uint32_t>(entries_.size());
    entries_.push_back(e);
  }
  void set_key_unordered(size_t pos, double key) { entries_[pos].key = key; }

  // Restores heap order over all entries in O(n).
  void heapify() {
    if (entries_.size() < 2) return;
    for (size_t i = (entries_.size() - 2) / kArity + 1; i-- > 0;) sift_down(i);
  }

  // The raw entries (heap order), e.g. for a bulk extraction followed by rebuild().
  std::vector<HeapEntry>& entries() { return entries_; }

  // Takes `entries` as the new content (any order) and restores heap order in O(n).
  void rebuild_from(std::vector<HeapEntry>&& entries) {
    entries_ = std::move(entries);
    for (size_t pos = 0; pos < entries_.size(); ++pos) (*positions_)[entries_[pos].slot] = static_cast<uint32_t>(pos);
    heapify();
  }

 private:
  void restore(size_t pos) {
    if (pos > 0 && Order::before(entries_[pos], entries_[(pos - 1) / kArity])) {
      sift_up(pos);
    } else {
      sift_down(pos);
    }
  }

  void sift_up(size_t pos) {
    HeapEntry moving = entries_[pos];
    while (pos > 0) {
      size_t parent = (pos - 1) / kArity;
      if (!Order::before(moving, entries_[parent])) break;
      place(pos, entries_[parent]);
      pos = parent;
    }
    place(pos, moving);
  }

  void sift_down(size_t pos) {
    const size_t n = entries_.size();
    HeapEntry moving = entries_[pos];
    for (;;) {
      const size_t first = kArity * pos + 1;
      if (first >= n) break;
      const size_t last = first + kArity < n ? first + kArity : n;
      size_t child = first;
      for (size_t c = first + 1; c < last; ++c) {
        if (Order::before(entries_[c], entries_[child])) child = c;
      }
      if (!Order::before(entries_[child], moving)) break;
      place(pos, entries_[child]);
      pos = child;
    }
    place(pos, moving);
  }

  void place(size_t pos, const HeapEntry& e) {
    entries_[pos] = e;
    (*positions_)[e.slot] = static_cast<uint32_t>(pos);
  }

  static constexpr size_t kArity = 4;
  std::vector<HeapEntry> entries_;
  std::vector<uint32_t>* positions_;
};

}  // namespace pangu::queue
