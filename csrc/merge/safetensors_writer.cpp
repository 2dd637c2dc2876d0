#include "merge/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/errors.h"

namespace pangu::merge {

namespace {
void write_all(int fd, const char* data, int64_t bytes, int64_t position, const std::string& path) {
  while (bytes > 0) {
    ssize_t done = ::pwrite(fd, data, static_cast<size_t>(bytes), static_cast<off_t>(position));
    if (done < 0 && errno == EINTR) continue;
    PANGU_CHECK(done > 0, Runtime, "cannot write ", path, ": ", std::strerror(errno));
    data += done;
    bytes -= done;
    position += done;
  }
}
}  // namespace

SafetensorsWriter::SafetensorsWriter(const std::string& path, const std::string& header_json, int depth)
    : path_(path), depth_(depth) {
  PANGU_CHECK(depth >= 1, Value, "depth: expected >= 1 queued tensors, got ", depth);
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  PANGU_CHECK(fd_ >= 0, Value, "path: cannot create ", path, ": ", std::strerror(errno));
  std::string header = header_json;
  header.append((8 - header.size() % 8) % 8, ' ');
  uint64_t length = header.size();
  char prefix[8];
  std::memcpy(prefix, &length, 8);
  try {
    write_all(fd_, prefix, 8, 0, path_);
    write_all(fd_, header.data(), static_cast<int64_t>(header.size()), 8, path_);
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
  data_start_ = 8 + static_cast<int64_t>(header.size());
  thread_ = std::thread([this] { run(); });
}

SafetensorsWriter::~SafetensorsWriter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsWriter::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    changed_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ with nothing left
    Item& item = queue_.front();
    lock.unlock();
    std::exception_ptr failure;
    try {
      if (!error_) {  // after a failure, later tensors are dropped unwritten
        write_all(fd_, static_cast<const char*>(item.view.data), item.view.nbytes(), data_start_ + item.offset, path_);
      }
    } catch (...) {
      failure = std::current_exception();
    }
    lock.lock();
    if (failure && !error_) error_ = failure;
    if (!failure) written_ += item.view.nbytes();
    finished_.push_back(std::move(item.view));
    queue_.pop_front();
    changed_.notify_all();
  }
}

void SafetensorsWriter::rethrow_locked() {
  if (error_) std::rethrow_exception(error_);
}

void SafetensorsWriter::release_finished() {
  std::vector<TensorView> done;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done.swap(finished_);
  }
  done.clear();  // may take the GIL to drop the exporter's reference: outside our lock
}

void SafetensorsWriter::submit(const TensorView& tensor, int64_t offset) {
  PANGU_CHECK(tensor.is_cpu(), Value, "tensor: expected a CPU tensor");
  check_contiguous(tensor, "tensor");
  PANGU_CHECK(offset >= 0, Value, "offset: expected >= 0, got ", offset);
  release_finished();
  {
    std::unique_lock<std::mutex> lock(mutex_);
    PANGU_CHECK(!closed_ && !stop_, Runtime, "submit: the writer of ", path_, " is closed");
    rethrow_locked();
    changed_.wait(lock, [&] { return static_cast<int>(queue_.size()) < depth_ || error_; });
    rethrow_locked();
    queue_.push_back({tensor, offset});
  }
  changed_.notify_all();
}

void SafetensorsWriter::close(bool sync) {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (closed_) return;
    changed_.wait(lock, [&] { return queue_.empty(); });
    stop_ = true;
    closed_ = true;
  }
  changed_.notify_all();
  thread_.join();
  release_finished();
  std::exception_ptr failure = error_;
  int fd = fd_;
  fd_ = -1;
  if (!failure && sync && ::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    fail(ErrorKind::Runtime, "cannot flush ", path_, ": ", std::strerror(err));
  }
  ::close(fd);
  if (failure) std::rethrow_exception(failure);
}

int64_t SafetensorsWriter::bytes_written() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return written_;
}

}  // namespace pangu::merge
