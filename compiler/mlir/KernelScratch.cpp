#include "compiler/mlir/KernelScratch.h"

#include <cstdlib>
#include <vector>

namespace einjit::cpu::detail {
namespace {

// Blocks below this size are malloc's (its arenas reuse them well).
constexpr std::size_t kLargeBlock = std::size_t{1} << 20;
// What one thread keeps of freed large blocks; beyond it the oldest go back to the system.
constexpr std::size_t kRetainedBytesPerThread = std::size_t{512} << 20;
// Every block starts with a header; the pointer handed out follows it, so it is aligned to
// the header's size (64: a cache line, and the widest vector a kernel loads).
constexpr std::size_t kHeaderBytes = 64;

struct Header {
  std::size_t capacity;  // usable bytes after the header; 0: a small block from malloc
  void* start;           // what malloc or aligned_alloc returned
};
static_assert(sizeof(Header) <= kHeaderBytes);

Header* headerOf(void* pointer) { return reinterpret_cast<Header*>(static_cast<char*>(pointer) - kHeaderBytes); }

// The large blocks this thread freed, oldest first.
class RetainedBlocks {
 public:
  ~RetainedBlocks() {
    for (void* block : blocks_) std::free(headerOf(block)->start);
  }
  // A retained block of at least `bytes` and at most twice that (so a small request does not
  // pin a huge block), the smallest such; null if none.
  void* take(std::size_t bytes) {
    std::size_t best = blocks_.size();
    for (std::size_t k = 0; k < blocks_.size(); ++k) {
      const std::size_t capacity = headerOf(blocks_[k])->capacity;
      if (capacity >= bytes && capacity / 2 <= bytes &&
          (best == blocks_.size() || capacity < headerOf(blocks_[best])->capacity))
        best = k;
    }
    if (best == blocks_.size()) return nullptr;
    void* block = blocks_[best];
    blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(best));
    bytes_ -= headerOf(block)->capacity;
    return block;
  }
  void put(void* block) {
    const std::size_t capacity = headerOf(block)->capacity;
    if (capacity > kRetainedBytesPerThread) {
      std::free(headerOf(block)->start);
      return;
    }
    blocks_.push_back(block);
    bytes_ += capacity;
    while (bytes_ > kRetainedBytesPerThread) {
      bytes_ -= headerOf(blocks_.front())->capacity;
      std::free(headerOf(blocks_.front())->start);
      blocks_.erase(blocks_.begin());
    }
  }
  std::size_t bytes() const { return bytes_; }

 private:
  std::vector<void*> blocks_;
  std::size_t bytes_ = 0;
};

RetainedBlocks& retained() {
  thread_local RetainedBlocks blocks;
  return blocks;
}

// A fresh block of `capacity` usable bytes whose pointer is aligned to `alignment`.
void* freshBlock(std::size_t capacity, std::size_t alignment, bool large) {
  const std::size_t pad = alignment > kHeaderBytes ? alignment : kHeaderBytes;
  void* start = std::aligned_alloc(pad, pad + ((capacity + pad - 1) / pad) * pad);
  if (start == nullptr) return nullptr;  // as malloc would: the kernel cannot take an exception
  void* pointer = static_cast<char*>(start) + pad;
  *headerOf(pointer) = Header{large ? capacity : 0, start};
  return pointer;
}

}  // namespace

void* scratchAlignedAlloc(std::size_t alignment, std::size_t bytes) {
  if (bytes < kLargeBlock || alignment > kHeaderBytes) return freshBlock(bytes, alignment, false);
  // Rounded up to whole pages, so that blocks of nearby sizes are interchangeable.
  const std::size_t capacity = (bytes + 4095) / 4096 * 4096;
  if (void* block = retained().take(capacity)) return block;
  return freshBlock(capacity, alignment, true);
}

void* scratchAlloc(std::size_t bytes) { return scratchAlignedAlloc(kHeaderBytes, bytes); }

void scratchFree(void* pointer) {
  if (pointer == nullptr) return;
  if (headerOf(pointer)->capacity == 0) {
    std::free(headerOf(pointer)->start);
    return;
  }
  retained().put(pointer);
}

std::size_t retainedScratchBytes() { return retained().bytes(); }

}  // namespace einjit::cpu::detail
