#include "common/work_pool.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"

#ifdef PANGU_WITH_OPENMP
#include <omp.h>
#endif

namespace pangu {
namespace {

// Helpers and a caller waiting for helpers look for news this long before they sleep: a parallel
// call that follows within microseconds (the next loop of the same kernel) then finds its helpers
// awake, and a caller whose helper is finishing its last group is not put to sleep for it. Longer
// would make idle helpers compete for the cores with whatever runs between calls.
constexpr auto kSpin = std::chrono::microseconds(5);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until done() or for kSpin; returns done().
template <typename Done>
bool spin_until(Done&& done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  while (!done()) {
    for (int i = 0; i < 16; ++i) cpu_relax();
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
  return true;
}

struct Job {
  int64_t groups = 0;
  int helpers = 0;              // pool threads allowed to join
  std::atomic<int> joined{0};   // pool threads that tried to
  const std::function<void(int64_t, const ClaimGroup&)>* body = nullptr;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mutex;
  std::condition_variable finished;
  std::exception_ptr error;
};

// Claims groups for one caller of body; counts them done after body returns (or throws), so the
// caller of run_groups cannot return while any body still runs on its data.
void work(Job& job, int64_t first) {
  int64_t claimed = 1;
  ClaimGroup claim = [&]() -> int64_t {
    int64_t g = job.next.fetch_add(1);
    if (g >= job.groups) return -1;
    ++claimed;
    return g;
  };
  try {
    (*job.body)(first, claim);
  } catch (...) {
    std::lock_guard<std::mutex> lock(job.mutex);
    if (!job.error) job.error = std::current_exception();
    int64_t left = job.next.exchange(job.groups);  // skip what nobody took yet; count it done here
    if (left < job.groups) claimed += job.groups - left;
  }
  if (job.done.fetch_add(claimed) + claimed == job.groups) {
    std::lock_guard<std::mutex> lock(job.mutex);
    job.finished.notify_all();
  }
}

class Pool {
 public:
  // Never destroyed: helpers may still sleep in wait() at process exit.
  static Pool& instance() {
    static std::mutex creation;
    static Pool* pool = nullptr;
    static pid_t owner = 0;
    std::lock_guard<std::mutex> lock(creation);
    if (pool == nullptr || owner != ::getpid()) {  // a forked child has none of the parent's helpers
      pool = new Pool();
      owner = ::getpid();
    }
    return *pool;
  }

  void run(const std::shared_ptr<Job>& job) {
    int sleeping = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (static_cast<int>(helpers_.size()) < job->helpers) {
        helpers_.emplace_back([this] { loop(); });
        helpers_.back().detach();
      }
      current_ = job;
      generation_.fetch_add(1);
      sleeping = sleepers_;
    }
    // Spinning helpers see the new generation by themselves; waking more sleepers than may join
    // would only cost them a trip back to sleep.
    for (int i = 0; i < std::min(sleeping, job->helpers); ++i) wake_.notify_one();
    int64_t first = job->next.fetch_add(1);
    if (first < job->groups) work(*job, first);
    if (spin_until([&] { return job->done.load() == job->groups; })) return;
    std::unique_lock<std::mutex> lock(job->mutex);
    job->finished.wait(lock, [&] { return job->done.load() == job->groups; });
  }

 private:
  void loop() {
    uint64_t seen = 0;
    while (true) {
      spin_until([&] { return generation_.load() != seen; });
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        if (generation_.load() == seen) {
          ++sleepers_;
          wake_.wait(lock, [&] { return generation_.load() != seen; });
          --sleepers_;
        }
        seen = generation_.load();
        job = current_;
      }
      if (!job || job->joined.fetch_add(1) >= job->helpers) continue;
      int64_t first = job->next.fetch_add(1);
      if (first < job->groups) work(*job, first);
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> helpers_;
  std::shared_ptr<Job> current_;      // guarded by mutex_
  std::atomic<uint64_t> generation_{0};  // changes under mutex_; read without it while spinning
  int sleepers_ = 0;                  // helpers blocked in wake_; guarded by mutex_
};

// Which executor run_groups uses; written by apply_threads_environment (at import) and by the
// fork handler, read by every call.
std::atomic<bool> g_use_openmp{
#ifdef PANGU_WITH_OPENMP
    true
#else
    false
#endif
};

// A forked child has none of its parent's OpenMP threads, and libgomp waits for them forever in the
// child's first parallel region; the child uses the pool, which starts helpers of its own.
void after_fork_in_child() { g_use_openmp.store(false); }
[[maybe_unused]] const int g_fork_handler = pthread_atfork(nullptr, nullptr, after_fork_in_child);

void run_on_openmp(Job& job) {
#ifdef PANGU_WITH_OPENMP
  // Inside another parallel region (nesting is off by default) the team is the calling thread alone,
  // which then claims every group.
#pragma omp parallel num_threads(job.helpers + 1)
  {
    int64_t first = job.next.fetch_add(1);
    if (first < job.groups) work(job, first);
  }
#else
  (void)job;
#endif
}

}  // namespace

void run_groups(int64_t groups, int threads, const std::function<void(int64_t, const ClaimGroup&)>& body) {
  if (groups <= 0) return;
  if (threads <= 1 || groups == 1) {
    int64_t next = 1;
    body(0, [&]() -> int64_t { return next < groups ? next++ : -1; });
    return;
  }
  auto job = std::make_shared<Job>();
  job->groups = groups;
  job->helpers = static_cast<int>(std::min<int64_t>(threads - 1, groups - 1));
  job->body = &body;
  if (g_use_openmp.load(std::memory_order_relaxed)) {
    run_on_openmp(*job);
  } else {
    Pool::instance().run(job);
  }
  if (job->error) std::rethrow_exception(job->error);
}

const char* threads_backend() { return g_use_openmp.load() ? "openmp" : "pool"; }

bool built_with_openmp() {
#ifdef PANGU_WITH_OPENMP
  return true;
#else
  return false;
#endif
}

void set_threads_backend(const std::string& name, const char* what) {
  PANGU_CHECK(name == "openmp" || name == "pool", Value, what, ": expected 'openmp' or 'pool', got '", name, "'");
  PANGU_CHECK(name == "pool" || built_with_openmp(), Value, what,
              ": 'openmp' asked for, but this build of the core has no OpenMP");
  g_use_openmp.store(name == "openmp");
}

void apply_threads_environment() {
  const char* env = std::getenv("PANGU_THREADS");
  if (env != nullptr && *env != '\0') set_threads_backend(env, "PANGU_THREADS");
}

}  // namespace pangu
