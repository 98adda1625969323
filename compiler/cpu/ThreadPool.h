// The CPU target's worker threads and the row partitioning of kernel calls.
//
// Why a hand-written pool rather than OpenMP or MLIR's async runtime: the CPU target splits work
// only at one level — whole kernel calls over contiguous row ranges — so it needs nothing more
// than "run these k closures and wait". Keeping the split on the host side means
//  - the partitioning is a pure function of (rows, threads), so parallel results are
//    reproducible run to run (per-chunk partial sums are added in chunk order);
//  - the generated code stays single-threaded and needs no extra runtime library
//    (libomp, libmlir_async_runtime) loaded into or linked with the JIT objects;
//  - one pool, created once, serves every kernel, with no oversubscription between nested
//    parallel regions.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace einjit::cpu {

// A half-open range of rows [begin, end).
struct RowRange {
  int64_t begin = 0, end = 0;
  bool operator==(const RowRange&) const = default;
};

// Splits [0, rows) into at most `parts` contiguous, non-empty, ordered chunks of equal length
// rounded up to a multiple of `align` (the last chunk takes the rest). rows == 0 gives one
// empty chunk, so that a kernel still runs once. Throws UserError for rows < 0, parts < 1 or
// align < 1.
std::vector<RowRange> splitRows(int64_t rows, int parts, int64_t align);

// The number of threads the CPU target uses: $EINJIT_THREADS if set and not empty (an integer
// in [1, 256], UserError otherwise), else std::thread::hardware_concurrency() (at least 1).
int configuredThreadCount();

// A fixed set of threads that run the tasks of parallelFor. The calling thread is one of the
// `threads`: a pool of 2 starts one background thread.
class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs task(i) for every i in [0, count), spread over the pool, and returns when all are
  // done. Which thread runs which i is not fixed; callers make results depend on i only.
  // The first exception thrown by a task is rethrown here (the other tasks still run).
  // Calls from several threads are serialised; a call from inside a task runs inline.
  void parallelFor(int64_t count, const std::function<void(int64_t)>& task);

 private:
  struct Job {
    const std::function<void(int64_t)>* task = nullptr;
    int64_t count = 0;
    int64_t next = 0;  // the next unclaimed index, guarded by mutex_
    std::exception_ptr error;
  };

  void workerLoop();
  void runTasks(Job& job);

  std::vector<std::thread> workers_;
  std::mutex submitMutex_;  // one parallelFor at a time
  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  Job* job_ = nullptr;
  // Written under mutex_; atomic so that the waits can spin on them without the lock.
  std::atomic<uint64_t> generation_ = 0;  // bumped per job; workers run each generation once
  std::atomic<int> workersDone_ = 0;      // workers that have finished the current generation
  bool stopping_ = false;
};

// The process-wide pool of configuredThreadCount() threads, created on first use.
ThreadPool& defaultThreadPool();

}  // namespace einjit::cpu
