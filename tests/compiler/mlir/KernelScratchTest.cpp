// The allocator of kernel-internal buffers: alignment, reuse of large blocks by the thread that
// freed them, and the bound on what a thread keeps.
#include "compiler/mlir/KernelScratch.h"

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace einjit::cpu::detail {
namespace {

bool alignedTo(const void* pointer, std::uintptr_t alignment) {
  return reinterpret_cast<std::uintptr_t>(pointer) % alignment == 0;
}

TEST(KernelScratch, BlocksAreAlignedAndWritable) {
  for (std::size_t bytes : {std::size_t{1}, std::size_t{100}, std::size_t{4} << 20}) {
    void* block = scratchAlloc(bytes);
    ASSERT_NE(block, nullptr);
    EXPECT_TRUE(alignedTo(block, 64)) << bytes;
    std::memset(block, 0xab, bytes);
    scratchFree(block);
  }
  void* wide = scratchAlignedAlloc(4096, 8 << 20);
  ASSERT_NE(wide, nullptr);
  EXPECT_TRUE(alignedTo(wide, 4096));
  scratchFree(wide);
  scratchFree(nullptr);  // as free() does
}

TEST(KernelScratch, LargeBlocksAreReusedBySameThread) {
  // On a thread of its own, so that no earlier test's retained blocks interfere.
  std::thread([] {
    EXPECT_EQ(retainedScratchBytes(), 0u);
    void* first = scratchAlloc(8 << 20);
    std::memset(first, 1, 8 << 20);
    scratchFree(first);
    EXPECT_GE(retainedScratchBytes(), std::size_t{8} << 20);
    void* again = scratchAlloc((8 << 20) - 100);  // a little smaller: the same block fits
    EXPECT_EQ(again, first);
    EXPECT_EQ(retainedScratchBytes(), 0u);
    // A much smaller request does not take (and pin) a block twice its size.
    scratchFree(again);
    void* small = scratchAlloc(2 << 20);
    EXPECT_NE(small, first);
    scratchFree(small);
    // Small blocks are malloc's and are not retained.
    const std::size_t before = retainedScratchBytes();
    scratchFree(scratchAlloc(1000));
    EXPECT_EQ(retainedScratchBytes(), before);
  }).join();
}

TEST(KernelScratch, ThreadKeepsBoundedAmount) {
  std::thread([] {
    std::vector<void*> blocks;
    for (int k = 0; k < 12; ++k) blocks.push_back(scratchAlloc(std::size_t{64} << 20));
    for (void* block : blocks) scratchFree(block);
    EXPECT_LE(retainedScratchBytes(), std::size_t{512} << 20);
    EXPECT_GT(retainedScratchBytes(), 0u);
  }).join();
}

}  // namespace
}  // namespace einjit::cpu::detail
