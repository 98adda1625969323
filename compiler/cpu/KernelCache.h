// The CPU target's cache of compiled kernels: in memory (per process) and on disk (shared by
// processes).
//
// Key: the program's fingerprint plus codegenIdentity() (codegen version, LLVM version, host
// CPU): everything that decides the generated object. Disk entries are named by the SHA-256 of
// that key text and carry the full key text, so a hash collision is detected, not loaded.
//
// Entry file (all integers little-endian):
//   magic "EINJITKC" (8 bytes) | format version (u32) | key length (u64) | key text |
//   payload length (u64) | CRC-32C of the payload (u32) | payload (the object bytes)
// A reader accepts an entry only if every field checks out and the file ends exactly after the
// payload; anything else (truncation, a flipped byte, another key, another format version) is
// a miss, and the entry is rebuilt and replaced. Writers publish entries atomically
// (temporary file, fsync, rename), so concurrent processes see whole entries or none.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "compiler/cpu/Checksums.h"
#include "compiler/cpu/CpuBackend.h"

namespace einjit::cpu {

// 2: the payload checksum is CRC-32C (was SHA-256).
constexpr uint32_t kCacheFormatVersion = 2;

struct CacheKey {
  std::string text;  // fingerprint and codegen identity, as stored in the entry
  std::string hash;  // toHex(sha256(text)): the entry's file name stem
};
CacheKey cacheKey(const KernelProgram& program);

// The directory `options` selects (see CacheOptions). Throws UserError if none can be derived
// (no EINJIT_CACHE_DIR, XDG_CACHE_HOME or HOME).
std::string cacheDirectory(const CacheOptions& options);
std::string cacheEntryPath(const std::string& directory, const CacheKey& key);

std::string encodeCacheEntry(const std::string& keyText, std::string_view payload);

// The payload of `bytes` if they are an intact entry for `keyText`; otherwise nullopt and, in
// `problem`, why not.
std::optional<std::string> decodeCacheEntry(std::string_view bytes, const std::string& keyText,
                                            std::string* problem = nullptr);

// Compiled kernels by key. Thread-safe. A disk I/O failure (unwritable directory, unreadable
// entry) never fails a compile: it is reported once per process on stderr and the kernel is
// compiled in memory.
class KernelCache {
 public:
  std::shared_ptr<const LoadedKernel> get(const KernelProgram& program, const CacheOptions& options,
                                          CompileStats* stats = nullptr);
  void clearMemory();

 private:
  std::shared_ptr<const LoadedKernel> fromDisk(const KernelProgram& program,
                                               const std::string& path, const CacheKey& key);

  std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<const LoadedKernel>> memory_;  // by key text
};

// The cache compileKernel uses.
KernelCache& processKernelCache();

}  // namespace einjit::cpu
