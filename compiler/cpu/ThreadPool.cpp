#include "compiler/cpu/ThreadPool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <string>

#include "einjit/error.h"

namespace einjit::cpu {
namespace {

constexpr int kMaxThreads = 256;

// True on the pool's background threads and on a caller while it runs tasks: a nested
// parallelFor there runs inline instead of waiting for threads that are busy with its parent.
thread_local bool insideTask = false;

// Both sides of a parallelFor spin on their condition for this long before they block on the
// condition variable. A kernel call's chunk takes about a millisecond, and waking a blocked
// thread on this project's VMs took long enough that the caller often claimed the sleeping
// worker's chunk too and ran the call alone: BTT rank 1 at d = 1024, forward, 2 threads, took
// 0.71-1.33 ms from run to run with blocking waits, 0.70-0.82 ms with spinning. Calls come back to back
// (a layer's kernels, a training step's ops), so a worker that has just finished usually sees
// the next job while it spins; idle longer than this, it sleeps and costs nothing.
constexpr auto kSpinTime = std::chrono::microseconds(200);

// Spins until `done()` or kSpinTime has passed; done()'s last value.
template <class Done>
bool spinUntil(Done done) {
  const auto until = std::chrono::steady_clock::now() + kSpinTime;
  for (;;) {
    for (int k = 0; k < 64; ++k) {
      if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
      _mm_pause();  // lets the other hyperthread run, and leaves the spin without a misprediction
#endif
    }
    if (std::chrono::steady_clock::now() >= until) return done();
  }
}

}  // namespace

std::vector<RowRange> splitRows(int64_t rows, int parts, int64_t align) {
  if (rows < 0) throw UserError("cannot split a negative row count " + std::to_string(rows));
  if (parts < 1 || align < 1)
    throw UserError("cannot split rows into " + std::to_string(parts) + " parts aligned to " +
                    std::to_string(align));
  if (rows == 0) return {RowRange{0, 0}};
  int64_t chunk = rows / parts + (rows % parts != 0 ? 1 : 0);
  chunk = (chunk / align + (chunk % align != 0 ? 1 : 0)) * align;
  std::vector<RowRange> ranges;
  for (int64_t begin = 0; begin < rows; begin += chunk)
    ranges.push_back({begin, std::min(rows, begin + chunk)});
  return ranges;
}

int configuredThreadCount() {
  if (const char* text = std::getenv("EINJIT_THREADS"); text != nullptr && *text != '\0') {
    char* end = nullptr;
    errno = 0;
    const long value = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || errno != 0 || value < 1 || value > kMaxThreads)
      throw UserError("EINJIT_THREADS must be an integer from 1 to " +
                      std::to_string(kMaxThreads) + ", not '" + text + "'");
    return static_cast<int>(value);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

ThreadPool::ThreadPool(int threads) {
  if (threads < 1 || threads > kMaxThreads)
    throw UserError("a thread pool needs 1 to " + std::to_string(kMaxThreads) + " threads, not " +
                    std::to_string(threads));
  for (int k = 1; k < threads; ++k) workers_.emplace_back([this] { workerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::runTasks(Job& job) {
  const bool wasInside = insideTask;
  insideTask = true;
  for (;;) {
    int64_t index;
    {
      std::lock_guard lock(mutex_);
      if (job.next >= job.count) break;
      index = job.next++;
    }
    try {
      (*job.task)(index);
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!job.error) job.error = std::current_exception();
    }
  }
  insideTask = wasInside;
}

void ThreadPool::workerLoop() {
  uint64_t seen = 0;
  for (;;) {
    Job* job;
    spinUntil([&] { return generation_.load(std::memory_order_acquire) != seen; });
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      job = job_;
    }
    runTasks(*job);
    {
      std::lock_guard lock(mutex_);
      ++workersDone_;
    }
    finished_.notify_one();
  }
}

void ThreadPool::parallelFor(int64_t count, const std::function<void(int64_t)>& task) {
  if (count <= 0) return;
  Job job;
  job.task = &task;
  job.count = count;
  if (insideTask || workers_.empty() || count == 1) {
    runTasks(job);
  } else {
    std::lock_guard submit(submitMutex_);
    {
      std::lock_guard lock(mutex_);
      job_ = &job;
      workersDone_ = 0;
      ++generation_;
    }
    wake_.notify_all();
    runTasks(job);
    // Every worker takes part in every generation, so once all have reported, none still
    // holds a pointer to `job`.
    const int workers = static_cast<int>(workers_.size());
    spinUntil([&] { return workersDone_.load(std::memory_order_acquire) == workers; });
    std::unique_lock lock(mutex_);
    finished_.wait(lock, [&] { return workersDone_ == workers; });
    job_ = nullptr;
  }
  if (job.error) std::rethrow_exception(job.error);
}

ThreadPool& defaultThreadPool() {
  static ThreadPool pool(configuredThreadCount());
  return pool;
}

}  // namespace einjit::cpu
