#include "shardseal/thread_pool.hpp"

// Linux: the CPU count honours the affinity mask (taskset, cgroups cpusets). Elsewhere:
// std::thread::hardware_concurrency(). The pool is re-created after fork() where there is fork.
#if defined(__linux__)
#include <sched.h>
#define SHARDSEAL_HAVE_SCHED_GETAFFINITY 1
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define SHARDSEAL_HAVE_PTHREAD_ATFORK 1
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

namespace shardseal {
namespace {

// One parallel_for call. Workers and the caller pull task indices from `next` until none are
// left; the caller waits for `finished` to reach n_tasks. A worker that picks up the job late
// only sees next >= n_tasks and never touches `task`, which lives on the caller's stack.
struct Job {
  const std::function<void(size_t)>* task;
  size_t n_tasks;
  std::atomic<size_t> next{0};
  std::atomic<size_t> finished{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex mutex;
  std::condition_variable all_done;

  void work() {
    for (size_t i = next.fetch_add(1); i < n_tasks; i = next.fetch_add(1)) {
      if (!failed.load(std::memory_order_relaxed)) run_one(i);
      if (finished.fetch_add(1) + 1 == n_tasks) {
        std::lock_guard<std::mutex> lock(mutex);
        all_done.notify_all();
      }
    }
  }

  void run_one(size_t i) {
    try {
      (*task)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!error) error = std::current_exception();
      failed = true;
    }
  }

  void wait() {
    std::unique_lock<std::mutex> lock(mutex);
    all_done.wait(lock, [this] { return finished.load() == n_tasks; });
  }
};

class Pool {
 public:
  // Queues `helpers` requests for workers to join `job`, starting workers as needed.
  void submit(const std::shared_ptr<Job>& job, size_t helpers) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (n_workers_ < helpers) {
        std::thread(&Pool::worker_loop, this).detach();
        ++n_workers_;
      }
      for (size_t i = 0; i < helpers; ++i) queue_.push_back(job);
    }
    wake_.notify_all();
  }

 private:
  void worker_loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return !queue_.empty(); });
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job->work();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  size_t n_workers_ = 0;
};

// The pool is never destroyed: its detached workers may still be waiting at process exit,
// and in a forked child its threads do not exist, so the old pool is abandoned, not freed.
std::mutex g_pool_mutex;
Pool* g_pool = nullptr;

#ifdef SHARDSEAL_HAVE_PTHREAD_ATFORK
void lock_pool_for_fork() { g_pool_mutex.lock(); }
void unlock_pool_after_fork() { g_pool_mutex.unlock(); }
void reset_pool_in_child() {
  g_pool = nullptr;
  g_pool_mutex.unlock();
}
#endif

Pool& pool() {
#ifdef SHARDSEAL_HAVE_PTHREAD_ATFORK
  static const bool registered = [] {
    pthread_atfork(lock_pool_for_fork, unlock_pool_after_fork, reset_pool_in_child);
    return true;
  }();
  (void)registered;
#endif
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_pool == nullptr) g_pool = new Pool();
  return *g_pool;
}

}  // namespace

unsigned available_cpus() {
#ifdef SHARDSEAL_HAVE_SCHED_GETAFFINITY
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<unsigned>(n);
  }
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

void parallel_for(size_t n_tasks, unsigned threads, const std::function<void(size_t)>& task) {
  if (n_tasks == 0) return;
  size_t helpers = std::min<size_t>(threads > 1 ? threads - 1 : 0, n_tasks - 1);
  if (helpers == 0) {
    for (size_t i = 0; i < n_tasks; ++i) task(i);
    return;
  }
  auto job = std::make_shared<Job>();
  job->task = &task;
  job->n_tasks = n_tasks;
  pool().submit(job, helpers);
  job->work();
  job->wait();
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace shardseal
