// The priority queue holding Python objects: owns one strong reference per queued item and moves
// it out on get, so nothing is copied, leaked or freed twice. Every reference count change happens
// with the GIL held; every blocking wait happens with the GIL released (WaitHooks) and the queue
// lock is never held while the GIL is being taken. It lives in the binding layer because it deals
// in Python objects; the queue itself (queue/priority_queue.h) knows nothing of Python.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "queue/priority_queue.h"

namespace pangu::queue {

class ObjectQueue {
 public:
  explicit ObjectQueue(const QueueOptions& options);
  // Releases the references of items still queued (the GIL is held by the caller, as in any
  // Python deallocation).
  ~ObjectQueue();
  ObjectQueue(const ObjectQueue&) = delete;
  ObjectQueue& operator=(const ObjectQueue&) = delete;

  // Arguments arrive as handles and are converted here so errors name the argument.
  // version: None (current) or int; timeout: None (forever) or seconds >= 0.
  // Returns the items handed back by this put (stale, or dropped by drop_lowest); usually empty.
  pybind11::list put(pybind11::handle item, pybind11::handle priority, pybind11::handle version,
                     pybind11::handle timeout);
  // items: a sequence; priorities: a number or a sequence / array of len(items);
  // versions: None, an int, or a sequence / array of len(items).
  pybind11::list put_many(pybind11::handle items, pybind11::handle priorities, pybind11::handle versions,
                          pybind11::handle timeout);
  pybind11::object get(pybind11::handle timeout);
  pybind11::list get_batch(pybind11::handle n, pybind11::handle timeout, pybind11::handle min_n);
  pybind11::list advance_version(pybind11::handle version);
  pybind11::list drain();

  PriorityQueue& core() { return queue_; }

 private:
  PriorityQueue queue_;
};

// Converters shared with the bindings: each names `arg` in its error.
double to_seconds(pybind11::handle timeout, const char* arg);
int64_t to_int64(pybind11::handle value, const char* arg);
size_t to_count(pybind11::handle value, const char* arg, size_t minimum);

}  // namespace pangu::queue
