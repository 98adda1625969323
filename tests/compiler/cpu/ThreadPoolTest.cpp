#include "compiler/cpu/ThreadPool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <thread>
#include <vector>

#include "einjit/error.h"

namespace einjit::cpu {
namespace {

TEST(SplitRows, CoversEveryRowExactlyOnceInOrder) {
  for (int64_t rows = 0; rows <= 300; ++rows)
    for (int parts = 1; parts <= 5; ++parts)
      for (int64_t align : {1, 8}) {
        SCOPED_TRACE(testing::Message() << "rows " << rows << " parts " << parts << " align "
                                        << align);
        const std::vector<RowRange> ranges = splitRows(rows, parts, align);
        ASSERT_FALSE(ranges.empty());
        ASSERT_LE(static_cast<int>(ranges.size()), parts);
        std::vector<int> covered(rows, 0);
        int64_t expectedBegin = 0;
        for (std::size_t k = 0; k < ranges.size(); ++k) {
          EXPECT_EQ(ranges[k].begin, expectedBegin);
          if (rows > 0) {
            EXPECT_LT(ranges[k].begin, ranges[k].end);  // no empty chunk
          }
          if (k + 1 < ranges.size()) {
            EXPECT_EQ((ranges[k].end - ranges[k].begin) % align, 0);
          }
          for (int64_t r = ranges[k].begin; r < ranges[k].end; ++r) ++covered[r];
          expectedBegin = ranges[k].end;
        }
        EXPECT_EQ(expectedBegin, rows);
        for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(covered[r], 1) << "row " << r;
      }
}

TEST(SplitRows, ExamplesAndRejects) {
  EXPECT_EQ(splitRows(0, 2, 8), (std::vector<RowRange>{{0, 0}}));
  EXPECT_EQ(splitRows(5, 2, 8), (std::vector<RowRange>{{0, 5}}));
  EXPECT_EQ(splitRows(67, 2, 8), (std::vector<RowRange>{{0, 40}, {40, 67}}));
  EXPECT_EQ(splitRows(2048, 2, 8), (std::vector<RowRange>{{0, 1024}, {1024, 2048}}));
  EXPECT_EQ(splitRows(10, 3, 1), (std::vector<RowRange>{{0, 4}, {4, 8}, {8, 10}}));
  EXPECT_THROW(splitRows(-1, 2, 8), UserError);
  EXPECT_THROW(splitRows(4, 0, 8), UserError);
  EXPECT_THROW(splitRows(4, 2, 0), UserError);
}

TEST(ThreadPool, RunsEveryIndexOnceOnEverySize) {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t count : {0, 1, 2, 3, 7, 100}) {
      std::vector<std::atomic<int>> runs(count);
      pool.parallelFor(count, [&](int64_t i) { runs[i].fetch_add(1); });
      for (int64_t i = 0; i < count; ++i) EXPECT_EQ(runs[i].load(), 1) << threads << " " << i;
    }
  }
}

TEST(ThreadPool, UsesSeveralThreads) {
  ThreadPool pool(2);
  std::atomic<int> arrived{0};
  std::vector<std::thread::id> ids(2);
  // Each task waits until both have started, which only two threads can achieve.
  pool.parallelFor(2, [&](int64_t i) {
    ids[i] = std::this_thread::get_id();
    arrived.fetch_add(1);
    while (arrived.load() < 2) std::this_thread::yield();
  });
  EXPECT_NE(ids[0], ids[1]);
}

TEST(ThreadPool, RethrowsATaskExceptionAfterTheOthersRun) {
  ThreadPool pool(2);
  std::atomic<int> ran{0};
  EXPECT_THROW(pool.parallelFor(6,
                                [&](int64_t i) {
                                  ran.fetch_add(1);
                                  if (i == 3) throw std::runtime_error("task 3");
                                }),
               std::runtime_error);
  EXPECT_EQ(ran.load(), 6);
  // The pool still works afterwards.
  std::atomic<int> again{0};
  pool.parallelFor(4, [&](int64_t) { again.fetch_add(1); });
  EXPECT_EQ(again.load(), 4);
}

TEST(ThreadPool, NestedCallsRunInline) {
  ThreadPool pool(2);
  std::atomic<int> inner{0};
  pool.parallelFor(2, [&](int64_t) { pool.parallelFor(3, [&](int64_t) { inner.fetch_add(1); }); });
  EXPECT_EQ(inner.load(), 6);
}

TEST(ThreadPool, ConcurrentCallersAreSerialised) {
  ThreadPool pool(2);
  std::atomic<int> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int round = 0; round < 50; ++round)
        pool.parallelFor(3, [&](int64_t) { total.fetch_add(1); });
    });
  for (std::thread& caller : callers) caller.join();
  EXPECT_EQ(total.load(), 4 * 50 * 3);
}

TEST(ThreadPool, ThreadCountFromTheEnvironment) {
  const char* saved = std::getenv("EINJIT_THREADS");
  const std::string savedValue = saved != nullptr ? saved : "";
  setenv("EINJIT_THREADS", "3", 1);
  EXPECT_EQ(configuredThreadCount(), 3);
  for (const char* bad : {"0", "-2", "two", "3x", "100000"}) {
    setenv("EINJIT_THREADS", bad, 1);
    EXPECT_THROW(configuredThreadCount(), UserError) << "'" << bad << "'";
  }
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  setenv("EINJIT_THREADS", "", 1);  // empty: unset
  EXPECT_EQ(configuredThreadCount(), hardware);
  unsetenv("EINJIT_THREADS");
  EXPECT_EQ(configuredThreadCount(), hardware);
  if (saved != nullptr) setenv("EINJIT_THREADS", savedValue.c_str(), 1);
  EXPECT_THROW(ThreadPool(0), UserError);
}

}  // namespace
}  // namespace einjit::cpu
