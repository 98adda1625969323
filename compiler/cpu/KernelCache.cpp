#include "compiler/cpu/KernelCache.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <system_error>

#include "einjit/error.h"
#include "runtime/io/Npy.h"

namespace einjit::cpu {
namespace {

// ---- little-endian fields of the entry format ----

constexpr char kMagic[8] = {'E', 'I', 'N', 'J', 'I', 'T', 'K', 'C'};

void appendU32(std::string& out, uint32_t value) {
  for (int k = 0; k < 4; ++k) out.push_back(static_cast<char>(value >> (8 * k)));
}

void appendU64(std::string& out, uint64_t value) {
  for (int k = 0; k < 8; ++k) out.push_back(static_cast<char>(value >> (8 * k)));
}

// Reads fields front to back; every read checks that the bytes are there.
class EntryReader {
 public:
  explicit EntryReader(std::string_view bytes) : bytes_(bytes) {}

  bool take(std::size_t count, std::string_view& field) {
    if (count > bytes_.size() - position_) return false;
    field = bytes_.substr(position_, count);
    position_ += count;
    return true;
  }
  bool takeU64(uint64_t& value) {
    std::string_view field;
    if (!take(8, field)) return false;
    value = 0;
    for (int k = 7; k >= 0; --k) value = value << 8 | static_cast<uint8_t>(field[k]);
    return true;
  }
  bool takeU32(uint32_t& value) {
    std::string_view field;
    if (!take(4, field)) return false;
    value = 0;
    for (int k = 3; k >= 0; --k) value = value << 8 | static_cast<uint8_t>(field[k]);
    return true;
  }
  std::size_t remaining() const { return bytes_.size() - position_; }

 private:
  std::string_view bytes_;
  std::size_t position_ = 0;
};

// ---- disk access ----

// Disk problems degrade the cache to memory only; say so once per process, not on every call.
void warnDiskOnce(const std::string& problem) {
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    std::cerr << "einjit: warning: kernel disk cache unavailable (" << problem
              << "); compiling in memory\n";
}

enum class ReadResult { Ok, Missing, Failed };

ReadResult readWholeFile(const std::string& path, std::string& contents, std::string& problem) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return ReadResult::Missing;
    problem = "cannot open '" + path + "': " + std::strerror(errno);
    return ReadResult::Failed;
  }
  contents.clear();
  char buffer[1 << 16];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      problem = "cannot read '" + path + "': " + std::strerror(errno);
      ::close(fd);
      return ReadResult::Failed;
    }
    if (got == 0) break;
    contents.append(buffer, static_cast<std::size_t>(got));
  }
  ::close(fd);
  return ReadResult::Ok;
}

const std::string& hostCodegenIdentity() {
  static const std::string identity = codegenIdentity();
  return identity;
}

std::string keyText(const KernelProgram& program) {
  return "einjit cpu kernel\n" + hostCodegenIdentity() + "\n" + program.fingerprint();
}

double millisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace

CacheKey cacheKey(const KernelProgram& program) {
  CacheKey key;
  key.text = keyText(program);
  key.hash = toHex(sha256(key.text));
  return key;
}

std::string cacheDirectory(const CacheOptions& options) {
  if (!options.directory.empty()) return options.directory;
  auto environment = [](const char* name) {
    const char* value = std::getenv(name);
    return std::string(value != nullptr ? value : "");
  };
  if (std::string dir = environment("EINJIT_CACHE_DIR"); !dir.empty()) return dir;
  // The XDG spec ignores relative values.
  if (std::string xdg = environment("XDG_CACHE_HOME"); !xdg.empty() && xdg[0] == '/')
    return xdg + "/einjit";
  if (std::string home = environment("HOME"); !home.empty()) return home + "/.cache/einjit";
  throw UserError("no kernel cache directory: set EINJIT_CACHE_DIR, XDG_CACHE_HOME or HOME");
}

std::string cacheEntryPath(const std::string& directory, const CacheKey& key) {
  return directory + "/" + key.hash + ".kernel";
}

std::string encodeCacheEntry(const std::string& keyText, std::string_view payload) {
  std::string entry(kMagic, sizeof kMagic);
  appendU32(entry, kCacheFormatVersion);
  appendU64(entry, keyText.size());
  entry += keyText;
  appendU64(entry, payload.size());
  appendU32(entry, crc32c(payload));
  entry += payload;
  return entry;
}

std::optional<std::string> decodeCacheEntry(std::string_view bytes, const std::string& keyText,
                                            std::string* problem) {
  auto fail = [&](const char* why) -> std::optional<std::string> {
    if (problem != nullptr) *problem = why;
    return std::nullopt;
  };
  EntryReader reader(bytes);
  std::string_view magic, key, payload;
  uint32_t version = 0, checksum = 0;
  uint64_t keyLength = 0, payloadLength = 0;
  if (!reader.take(sizeof kMagic, magic) || magic != std::string_view(kMagic, sizeof kMagic))
    return fail("not a kernel cache entry (bad magic)");
  if (!reader.takeU32(version)) return fail("truncated header");
  if (version != kCacheFormatVersion) return fail("another format version");
  if (!reader.takeU64(keyLength) || !reader.take(keyLength, key)) return fail("truncated key");
  if (key != keyText) return fail("the entry belongs to another key");
  if (!reader.takeU64(payloadLength) || !reader.takeU32(checksum))
    return fail("truncated header");
  if (payloadLength != reader.remaining()) return fail("payload length mismatch");
  reader.take(payloadLength, payload);
  if (crc32c(payload) != checksum) return fail("payload checksum mismatch");
  return std::string(payload);
}

std::shared_ptr<const LoadedKernel> KernelCache::fromDisk(const KernelProgram& program,
                                                          const std::string& path,
                                                          const CacheKey& key) {
  std::string bytes, problem;
  switch (readWholeFile(path, bytes, problem)) {
    case ReadResult::Missing:
      return nullptr;
    case ReadResult::Failed:
      warnDiskOnce(problem);
      return nullptr;
    case ReadResult::Ok:
      break;
  }
  const std::optional<std::string> object = decodeCacheEntry(bytes, key.text);
  if (!object) return nullptr;  // damaged or foreign: rebuilt and replaced by the caller
  try {
    return loadObject(*object, program);
  } catch (const UserError&) {
    return nullptr;  // intact bytes the loader rejects (e.g. written by a buggy build)
  }
}

std::shared_ptr<const LoadedKernel> KernelCache::get(const KernelProgram& program,
                                                     const CacheOptions& options,
                                                     CompileStats* stats) {
  const auto start = std::chrono::steady_clock::now();
  CompileStats local;
  const std::string text = keyText(program);
  auto finish = [&](std::shared_ptr<const LoadedKernel> kernel) {
    local.milliseconds = millisecondsSince(start);
    if (stats != nullptr) *stats = local;
    return kernel;
  };
  // Two threads missing on one key at once both compile; the first to finish is kept.
  auto remember = [&](std::shared_ptr<const LoadedKernel> kernel) {
    std::lock_guard lock(mutex_);
    return memory_.try_emplace(text, std::move(kernel)).first->second;
  };
  {
    std::lock_guard lock(mutex_);
    if (auto found = memory_.find(text); found != memory_.end()) {
      local.memoryHit = true;
      return finish(found->second);
    }
  }

  // The directory is created only to write an entry: a lookup needs nothing but the file (a
  // missing directory reads as a missing entry), which keeps filesystem calls off a hit.
  std::string directory, path;
  CacheKey key{text, toHex(sha256(text))};
  if (options.useDisk) {
    try {
      directory = cacheDirectory(options);
      path = cacheEntryPath(directory, key);
    } catch (const UserError& error) {
      warnDiskOnce(error.what());
    }
  }
  if (!path.empty()) {
    if (std::shared_ptr<const LoadedKernel> kernel = fromDisk(program, path, key)) {
      local.diskHit = true;
      return finish(remember(std::move(kernel)));
    }
  }

  const std::string object = compileToObject(program);
  std::shared_ptr<const LoadedKernel> kernel = loadObject(object, program);
  if (!path.empty()) {
    std::error_code error;
    std::filesystem::create_directories(directory, error);
    if (error) {
      warnDiskOnce("cannot create '" + directory + "': " + error.message());
    } else {
      try {
        writeFileAtomically(path, encodeCacheEntry(key.text, object));
      } catch (const UserError& writeError) {
        warnDiskOnce(writeError.what());
      }
    }
  }
  return finish(remember(std::move(kernel)));
}

void KernelCache::clearMemory() {
  std::lock_guard lock(mutex_);
  memory_.clear();
}

KernelCache& processKernelCache() {
  static KernelCache cache;
  return cache;
}

}  // namespace einjit::cpu
