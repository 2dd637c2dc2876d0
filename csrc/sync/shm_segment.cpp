#include "sync/shm_segment.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "common/errors.h"

namespace pangu {
namespace {

// Owned names live in a fixed table of plain char arrays so the signal handler can read them
// without allocating or locking (only async-signal-safe calls there: shm_unlink, sigaction, raise).
constexpr int kMaxOwned = 256;
constexpr size_t kMaxName = 240;
struct OwnedName {
  std::atomic<int> state{0};  // 0 free, 1 being written, 2 holds a name
  char name[kMaxName];
};
OwnedName g_owned[kMaxOwned];

void register_owned(const std::string& name) {
  for (auto& slot : g_owned) {
    int expected = 0;
    if (slot.state.compare_exchange_strong(expected, 1)) {
      std::snprintf(slot.name, kMaxName, "%s", name.c_str());
      slot.state.store(2);
      return;
    }
  }
  // Table full: the segment is still unlinked by its destructor and by the sweep; only the
  // fatal-signal path misses it.
}

void unregister_owned(const std::string& name) {
  for (auto& slot : g_owned) {
    int expected = 2;
    if (slot.state.load() == 2 && name == slot.name && slot.state.compare_exchange_strong(expected, 1)) {
      slot.name[0] = '\0';
      slot.state.store(0);
      return;
    }
  }
}

constexpr int kSignals[] = {SIGTERM, SIGHUP, SIGQUIT, SIGABRT, SIGSEGV, SIGBUS};
struct sigaction g_previous[sizeof(kSignals) / sizeof(kSignals[0])];

void on_fatal_signal(int sig, siginfo_t* info, void* context) {
  size_t index = 0;
  while (index < sizeof(kSignals) / sizeof(kSignals[0]) && kSignals[index] != sig) ++index;
  const struct sigaction& prev = g_previous[index];
  bool has_function = (prev.sa_flags & SA_SIGINFO) ? prev.sa_sigaction != nullptr
                                                   : (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN);
  if (has_function) {
    // Someone else (e.g. Python's signal module) handles it and the process may well go on, still
    // using its segments: hand over without unlinking.
    if (prev.sa_flags & SA_SIGINFO) prev.sa_sigaction(sig, info, context);
    else prev.sa_handler(sig);
    return;
  }
  if (prev.sa_handler == SIG_IGN) return;
  for (auto& slot : g_owned) {
    if (slot.state.load() == 2) shm_unlink(slot.name);
  }
  sigaction(sig, &prev, nullptr);
  raise(sig);
}

std::string errno_text() { return std::strerror(errno); }

bool valid_part(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

uint64_t process_start_time(int64_t pid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%lld/stat", static_cast<long long>(pid));
  FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  char buf[1024];
  size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  char* p = std::strrchr(buf, ')');
  if (!p) return 0;
  int field = 2;
  for (++p; *p && field < 22; ++p) {
    if (*p == ' ') ++field;
  }
  return field == 22 ? std::strtoull(p, nullptr, 10) : 0;
}

bool process_alive(int64_t pid, uint64_t start_time) {
  if (pid <= 0) return false;
  if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  uint64_t actual = process_start_time(pid);
  if (actual == 0) return kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH;
  // A zombie keeps its /proc entry until reaped but will never touch the segment again.
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%lld/stat", static_cast<long long>(pid));
  if (FILE* f = std::fopen(path, "r")) {
    char buf[512];
    size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    if (char* p = std::strrchr(buf, ')'); p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X')) return false;
  }
  return start_time == 0 || actual == start_time;
}

std::string segment_name(const std::string& prefix, const std::string& tag) {
  PANGU_CHECK(valid_part(prefix), Value, "prefix: expected 1-64 characters of [A-Za-z0-9_-], got '", prefix, "'");
  PANGU_CHECK(valid_part(tag), Value, "tag: expected 1-64 characters of [A-Za-z0-9_-], got '", tag, "'");
  int64_t pid = getpid();
  return "/" + prefix + "." + std::to_string(pid) + "." + std::to_string(process_start_time(pid)) + "." + tag;
}

SegmentNameParts parse_segment_name(const std::string& name) {
  SegmentNameParts parts;
  std::string s = (!name.empty() && name[0] == '/') ? name.substr(1) : name;
  size_t a = s.find('.');
  if (a == std::string::npos) return parts;
  size_t b = s.find('.', a + 1);
  if (b == std::string::npos) return parts;
  size_t c = s.find('.', b + 1);
  if (c == std::string::npos) return parts;
  std::string pid = s.substr(a + 1, b - a - 1), start = s.substr(b + 1, c - b - 1);
  if (pid.empty() || start.empty() || pid.find_first_not_of("0123456789") != std::string::npos ||
      start.find_first_not_of("0123456789") != std::string::npos)
    return parts;
  parts.prefix = s.substr(0, a);
  parts.pid = std::stoll(pid);
  parts.start_time = std::stoull(start);
  parts.tag = s.substr(c + 1);
  parts.valid = valid_part(parts.prefix) && !parts.tag.empty();
  return parts;
}

ShmSegment::~ShmSegment() { close(); }

ShmSegment::ShmSegment(ShmSegment&& other) noexcept
    : name_(std::move(other.name_)), data_(other.data_), size_(other.size_), owner_(other.owner_) {
  other.data_ = nullptr;
  other.size_ = 0;
  other.owner_ = false;
}

ShmSegment& ShmSegment::operator=(ShmSegment&& other) noexcept {
  if (this != &other) {
    close();
    name_ = std::move(other.name_);
    data_ = other.data_;
    size_ = other.size_;
    owner_ = other.owner_;
    other.data_ = nullptr;
    other.size_ = 0;
    other.owner_ = false;
  }
  return *this;
}

ShmSegment ShmSegment::create(const std::string& name, size_t bytes) {
  PANGU_CHECK(name.size() > 1 && name[0] == '/' && name.find('/', 1) == std::string::npos && name.size() < kMaxName,
              Value, "name: expected '/<name>' without further slashes and under ", kMaxName, " characters, got '",
              name, "'");
  PANGU_CHECK(bytes > 0, Value, "bytes: expected > 0, got ", bytes);
  int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    PANGU_CHECK(errno != EEXIST, Value, "name: a shared-memory segment '", name, "' already exists");
    fail(ErrorKind::Runtime, "shm_open('", name, "') failed: ", errno_text());
  }
  register_owned(name);
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    std::string why = errno_text();
    ::close(fd);
    shm_unlink(name.c_str());
    unregister_owned(name);
    fail(ErrorKind::Runtime, "ftruncate of '", name, "' to ", bytes, " bytes failed: ", why);
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    std::string why = errno_text();
    shm_unlink(name.c_str());
    unregister_owned(name);
    fail(ErrorKind::Runtime, "mmap of '", name, "' (", bytes, " bytes) failed: ", why);
  }
  ShmSegment seg;
  seg.name_ = name;
  seg.data_ = p;
  seg.size_ = bytes;
  seg.owner_ = true;
  return seg;
}

ShmSegment ShmSegment::open(const std::string& name) {
  int fd = shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) {
    PANGU_CHECK(errno != ENOENT, PeerLost, "shared-memory segment '", name,
                "' does not exist (its publisher exited, was killed, or never created it)");
    fail(ErrorKind::Runtime, "shm_open('", name, "') failed: ", errno_text());
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size <= 0) {
    ::close(fd);
    fail(ErrorKind::PeerLost, "shared-memory segment '", name, "' is empty or unreadable");
  }
  size_t bytes = static_cast<size_t>(st.st_size);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  PANGU_CHECK(p != MAP_FAILED, Runtime, "mmap of '", name, "' failed: ", errno_text());
  ShmSegment seg;
  seg.name_ = name;
  seg.data_ = p;
  seg.size_ = bytes;
  seg.owner_ = false;
  return seg;
}

void ShmSegment::close() {
  if (data_) {
    munmap(data_, size_);
    data_ = nullptr;
  }
  if (owner_) {
    shm_unlink(name_.c_str());
    unregister_owned(name_);
    owner_ = false;
  }
  size_ = 0;
}

void ShmSegment::unlink() {
  if (owner_) {
    shm_unlink(name_.c_str());
    unregister_owned(name_);
    owner_ = false;
  }
}

std::vector<std::string> list_segments(const std::string& prefix) {
  std::vector<std::string> out;
  DIR* dir = opendir("/dev/shm");
  if (!dir) return out;
  std::string start = prefix + ".";
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name.compare(0, start.size(), start) == 0) out.push_back("/" + name);
  }
  closedir(dir);
  return out;
}

std::vector<std::string> sweep_dead_segments(const std::string& prefix) {
  PANGU_CHECK(valid_part(prefix), Value, "prefix: expected 1-64 characters of [A-Za-z0-9_-], got '", prefix, "'");
  std::vector<std::string> removed;
  for (const std::string& name : list_segments(prefix)) {
    SegmentNameParts parts = parse_segment_name(name);
    if (!parts.valid || parts.prefix != prefix) continue;
    if (process_alive(parts.pid, parts.start_time)) continue;
    if (shm_unlink(name.c_str()) == 0) removed.push_back(name);
  }
  return removed;
}

void install_cleanup_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (size_t i = 0; i < sizeof(kSignals) / sizeof(kSignals[0]); ++i) {
      struct sigaction action;
      std::memset(&action, 0, sizeof(action));
      action.sa_sigaction = on_fatal_signal;
      action.sa_flags = SA_SIGINFO;
      sigemptyset(&action.sa_mask);
      sigaction(kSignals[i], &action, &g_previous[i]);
    }
  });
}

}  // namespace pangu
