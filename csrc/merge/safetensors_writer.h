// Write side of the safetensors format, streaming: the header (every tensor's name, dtype, shape
// and offsets, prepared by the caller) is written first, then tensors are handed over one by one
// and written at their offsets by a background thread while the caller computes the next one.
// At most `depth` tensors wait in the queue, so memory stays bounded by what is in flight.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/tensor_view.h"

namespace pangu::merge {

class SafetensorsWriter {
 public:
  // Creates `path` (it must not exist) and writes the 8-byte length plus `header_json`, padded with
  // spaces to a multiple of 8 bytes so tensor data starts aligned. Throws ValueError naming the path.
  SafetensorsWriter(const std::string& path, const std::string& header_json, int depth);
  // Joins the writer thread; closes the file without fsync if close() was not called.
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Queues the bytes of `tensor` (contiguous, CPU) to be written at data offset `offset`. Blocks
  // while `depth` tensors are queued. Rethrows a write error of an earlier tensor. The view (and so
  // the caller's buffer) is kept alive until written.
  void submit(const TensorView& tensor, int64_t offset);
  // Waits for every queued tensor, fsyncs when `sync` (durable against a power loss, not just a
  // killed process), and closes. Rethrows any write error. Idempotent.
  void close(bool sync);
  int64_t data_start() const { return data_start_; }
  int64_t bytes_written() const;

 private:
  void run();
  void rethrow_locked();
  void release_finished();

  struct Item {
    TensorView view;
    int64_t offset;
  };
  std::string path_;
  int fd_ = -1;
  int depth_;
  int64_t data_start_ = 0;
  int64_t written_ = 0;
  bool stop_ = false;
  bool closed_ = false;
  std::exception_ptr error_;
  std::deque<Item> queue_;
  std::vector<TensorView> finished_;  // dropped by the caller's thread, never by the writer thread
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::thread thread_;
};

}  // namespace pangu::merge
