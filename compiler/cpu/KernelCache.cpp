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

// ---- SHA-256 (FIPS 180-4) ----

constexpr uint32_t kRoundConstants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

uint32_t rotateRight(uint32_t value, int bits) { return (value >> bits) | (value << (32 - bits)); }

void compressBlock(uint32_t state[8], const uint8_t block[64]) {
  uint32_t w[64];
  for (int t = 0; t < 16; ++t)
    w[t] = uint32_t{block[4 * t]} << 24 | uint32_t{block[4 * t + 1]} << 16 |
           uint32_t{block[4 * t + 2]} << 8 | uint32_t{block[4 * t + 3]};
  for (int t = 16; t < 64; ++t) {
    const uint32_t s0 = rotateRight(w[t - 15], 7) ^ rotateRight(w[t - 15], 18) ^ (w[t - 15] >> 3);
    const uint32_t s1 = rotateRight(w[t - 2], 17) ^ rotateRight(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
  uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
  for (int t = 0; t < 64; ++t) {
    const uint32_t s1 = rotateRight(e, 6) ^ rotateRight(e, 11) ^ rotateRight(e, 25);
    const uint32_t choose = (e & f) ^ (~e & g);
    const uint32_t temp1 = h + s1 + choose + kRoundConstants[t] + w[t];
    const uint32_t s0 = rotateRight(a, 2) ^ rotateRight(a, 13) ^ rotateRight(a, 22);
    const uint32_t majority = (a & b) ^ (a & c) ^ (b & c);
    const uint32_t temp2 = s0 + majority;
    h = g;
    g = f;
    f = e;
    e = d + temp1;
    d = c;
    c = b;
    b = a;
    a = temp1 + temp2;
  }
  state[0] += a, state[1] += b, state[2] += c, state[3] += d;
  state[4] += e, state[5] += f, state[6] += g, state[7] += h;
}

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

Sha256Digest sha256(std::string_view bytes) {
  uint32_t state[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  std::size_t full = bytes.size() / 64 * 64;
  for (std::size_t offset = 0; offset < full; offset += 64) compressBlock(state, data + offset);
  // The tail, a 1 bit, zeros, and the bit length as a big-endian 64-bit number.
  uint8_t tail[128] = {};
  const std::size_t rest = bytes.size() - full;
  std::memcpy(tail, data + full, rest);
  tail[rest] = 0x80;
  const std::size_t tailLength = rest + 9 <= 64 ? 64 : 128;
  const uint64_t bitLength = static_cast<uint64_t>(bytes.size()) * 8;
  for (int k = 0; k < 8; ++k) tail[tailLength - 1 - k] = static_cast<uint8_t>(bitLength >> (8 * k));
  for (std::size_t offset = 0; offset < tailLength; offset += 64)
    compressBlock(state, tail + offset);
  Sha256Digest digest;
  for (int k = 0; k < 8; ++k)
    for (int b = 0; b < 4; ++b) digest[4 * k + b] = static_cast<uint8_t>(state[k] >> (24 - 8 * b));
  return digest;
}

std::string toHex(const Sha256Digest& digest) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (uint8_t byte : digest) {
    hex.push_back(kDigits[byte >> 4]);
    hex.push_back(kDigits[byte & 15]);
  }
  return hex;
}

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
  const Sha256Digest checksum = sha256(payload);
  entry.append(reinterpret_cast<const char*>(checksum.data()), checksum.size());
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
  std::string_view magic, key, checksum, payload;
  uint32_t version = 0;
  uint64_t keyLength = 0, payloadLength = 0;
  if (!reader.take(sizeof kMagic, magic) || magic != std::string_view(kMagic, sizeof kMagic))
    return fail("not a kernel cache entry (bad magic)");
  if (!reader.takeU32(version)) return fail("truncated header");
  if (version != kCacheFormatVersion) return fail("another format version");
  if (!reader.takeU64(keyLength) || !reader.take(keyLength, key)) return fail("truncated key");
  if (key != keyText) return fail("the entry belongs to another key");
  if (!reader.takeU64(payloadLength) || !reader.take(32, checksum))
    return fail("truncated header");
  if (payloadLength != reader.remaining()) return fail("payload length mismatch");
  reader.take(payloadLength, payload);
  const Sha256Digest actual = sha256(payload);
  if (checksum != std::string_view(reinterpret_cast<const char*>(actual.data()), actual.size()))
    return fail("payload checksum mismatch");
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

  std::string path;
  CacheKey key{text, toHex(sha256(text))};
  if (options.useDisk) {
    try {
      const std::string directory = cacheDirectory(options);
      std::error_code error;
      std::filesystem::create_directories(directory, error);
      if (error)
        warnDiskOnce("cannot create '" + directory + "': " + error.message());
      else
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
    try {
      writeFileAtomically(path, encodeCacheEntry(key.text, object));
    } catch (const UserError& error) {
      warnDiskOnce(error.what());
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
