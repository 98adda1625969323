#include "compiler/cpu/KernelCache.h"

#include <gtest/gtest.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "einjit/error.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "tests/compiler/cpu/CpuTestSupport.h"

extern char** environ;

namespace einjit::cpu {
namespace {

namespace fs = std::filesystem;

// ---- checksums and the entry format (no compiler needed) ----

TEST(Sha256, KnownDigests) {
  // FIPS 180-2 examples and padding edge lengths (55, 56, 63, 64 bytes), from Python's hashlib.
  EXPECT_EQ(toHex(sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(toHex(sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(toHex(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(toHex(sha256(std::string(55, 'a'))),
            "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  EXPECT_EQ(toHex(sha256(std::string(56, 'a'))),
            "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  EXPECT_EQ(toHex(sha256(std::string(63, 'a'))),
            "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34");
  EXPECT_EQ(toHex(sha256(std::string(64, 'a'))),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
  EXPECT_EQ(toHex(sha256(std::string(1000000, 'a'))),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// The check value and RFC 3720 B.4's examples (the same from Python's crcmod, crc-32c), for
// both the function the cache uses and the table fallback.
TEST(Crc32c, KnownValues) {
  for (auto* crc : {&crc32c, &crc32cByTable}) {
    EXPECT_EQ(crc(""), 0x00000000u);
    EXPECT_EQ(crc("123456789"), 0xe3069283u);
    EXPECT_EQ(crc("a"), 0xc1d04330u);
    EXPECT_EQ(crc(std::string(32, '\0')), 0x8a9136aau);
    EXPECT_EQ(crc(std::string(32, '\xff')), 0x62a8ab43u);
  }
}

// crc32c takes 8-byte words where the CPU has the crc32 instruction, then single bytes: it must
// agree with the table on every length and unaligned start, and see one flipped bit anywhere.
TEST(Crc32c, AgreesWithTheTableAndSeesOneBit) {
  // Lengths around the 8-byte words of the instruction path, from unaligned starts.
  std::string bytes(80, '\0');
  for (std::size_t k = 0; k < bytes.size(); ++k) bytes[k] = static_cast<char>(k * 37 + 11);
  for (std::size_t start = 0; start < 8; ++start)
    for (std::size_t length = 0; start + length <= bytes.size(); ++length) {
      const std::string_view piece(bytes.data() + start, length);
      const uint32_t crc = crc32c(piece);
      EXPECT_EQ(crc, crc32cByTable(piece)) << "start " << start << " length " << length;
      for (std::size_t at = 0; at < length; at += 7) {
        std::string flipped(piece);
        flipped[at] = static_cast<char>(flipped[at] ^ 0x04);
        EXPECT_NE(crc32c(flipped), crc) << "start " << start << " length " << length << " at " << at;
      }
    }
}

TEST(CacheEntry, LayoutRoundTrip) {
  const std::string key = "key text", payload("obj\0bytes", 9);
  const std::string entry = encodeCacheEntry(key, payload);
  // magic 8 + version 4 + key length 8 + key + payload length 8 + checksum 4 + payload
  ASSERT_EQ(entry.size(), 8 + 4 + 8 + key.size() + 8 + 4 + payload.size());
  EXPECT_EQ(entry.substr(0, 8), "EINJITKC");
  EXPECT_EQ(entry.substr(8, 4), std::string("\2\0\0\0", 4));  // version 2, little-endian
  EXPECT_EQ(entry.substr(12, 8), std::string("\x08\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(entry.substr(20, key.size()), key);
  EXPECT_EQ(entry.substr(20 + key.size(), 8), std::string("\x09\0\0\0\0\0\0\0", 8));
  const uint32_t crc = crc32c(payload);
  const char crcBytes[4] = {static_cast<char>(crc), static_cast<char>(crc >> 8),
                            static_cast<char>(crc >> 16), static_cast<char>(crc >> 24)};
  EXPECT_EQ(entry.substr(28 + key.size(), 4), std::string(crcBytes, 4));
  EXPECT_EQ(entry.substr(32 + key.size()), payload);
  EXPECT_EQ(decodeCacheEntry(entry, key), payload);
  EXPECT_EQ(decodeCacheEntry(encodeCacheEntry(key, ""), key), "");
}

TEST(CacheEntry, EveryDamageIsRejected) {
  const std::string key = "fingerprint of some program", payload = "the object bytes";
  const std::string entry = encodeCacheEntry(key, payload);
  std::string problem;
  for (std::size_t length = 0; length < entry.size(); ++length)
    EXPECT_FALSE(decodeCacheEntry(entry.substr(0, length), key, &problem)) << "length " << length;
  for (std::size_t at = 0; at < entry.size(); ++at)
    for (unsigned char mask : {0x01, 0x80}) {
      std::string flipped = entry;
      flipped[at] = static_cast<char>(flipped[at] ^ mask);
      EXPECT_FALSE(decodeCacheEntry(flipped, key, &problem)) << "byte " << at;
      EXPECT_FALSE(problem.empty());
    }
  EXPECT_FALSE(decodeCacheEntry(entry + "x", key, &problem));
  EXPECT_EQ(problem, "payload length mismatch");
  EXPECT_FALSE(decodeCacheEntry(entry, "another key", &problem));
  EXPECT_EQ(problem, "the entry belongs to another key");
  std::string otherVersion = entry;
  otherVersion[8] = 1;
  EXPECT_FALSE(decodeCacheEntry(otherVersion, key, &problem));
  EXPECT_EQ(problem, "another format version");
  // A key length far beyond the file must not be trusted.
  std::string hugeKey = entry;
  hugeKey[19] = '\x7f';
  EXPECT_FALSE(decodeCacheEntry(hugeKey, key, &problem));
}

// Sets (or unsets, for nullptr) an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) saved_ = old;
    value != nullptr ? setenv(name, value, 1) : unsetenv(name);
  }
  ~ScopedEnv() { saved_ ? setenv(name_, saved_->c_str(), 1) : unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> saved_;
};

TEST(CacheDirectory, OptionThenEnvironment) {
  ScopedEnv cacheDir("EINJIT_CACHE_DIR", "/e/cache"), xdg("XDG_CACHE_HOME", "/x"),
      home("HOME", "/h");
  EXPECT_EQ(cacheDirectory({"/given", true}), "/given");
  EXPECT_EQ(cacheDirectory({}), "/e/cache");
  {
    ScopedEnv unset("EINJIT_CACHE_DIR", nullptr);
    EXPECT_EQ(cacheDirectory({}), "/x/einjit");
    ScopedEnv relativeXdg("XDG_CACHE_HOME", "relative");
    EXPECT_EQ(cacheDirectory({}), "/h/.cache/einjit");
    ScopedEnv noXdg("XDG_CACHE_HOME", nullptr);
    EXPECT_EQ(cacheDirectory({}), "/h/.cache/einjit");
    ScopedEnv noHome("HOME", nullptr);
    EXPECT_THROW(cacheDirectory({}), UserError);
  }
  EXPECT_EQ(cacheEntryPath("/d", CacheKey{"text", "abc"}), "/d/abc.kernel");
}

// ---- the cache with real compiles ----

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void writeFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// The loaded kernel computes the test layer's forward pass (checked against the reference).
void expectComputesTestLayer(const LoadedKernel& kernel) {
  const ir::LayerProgram layer = buildLayer(test::kCacheTestLayer);
  const KernelProgram program = test::cacheTestProgram();
  const TensorMap params = initLayerParams(layer, 11, DType::F64);
  const int64_t rows = 13;
  const Tensor x = test::randomTensor(DType::F64, {rows, layer.dIn}, 5);
  std::vector<const Tensor*> inputs = {&x};
  for (const ir::Parameter& param : layer.params) inputs.push_back(&params.at(param.name));
  Tensor y(DType::F64, {rows, layer.dOut});
  runKernel(program, kernel, rows, inputs, {&y});
  test::expectClose(y, referenceLayerForward(layer, params, x), 1e-9, "cached kernel output");
}

class KernelCacheDisk : public testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/einjit-cache-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    directory_ = pattern;
    program_ = test::cacheTestProgram();
    key_ = cacheKey(program_);
    entry_ = cacheEntryPath(directory_, key_);
  }
  void TearDown() override { fs::remove_all(directory_); }

  CacheOptions options() const { return {directory_, true}; }

  // Entry files and leftovers (temporary files) in the directory.
  std::vector<std::string> listDirectory() const {
    std::vector<std::string> names;
    for (const fs::directory_entry& file : fs::directory_iterator(directory_))
      names.push_back(file.path().filename().string());
    return names;
  }

  void expectValidEntry() const {
    ASSERT_TRUE(fs::exists(entry_));
    std::string problem;
    EXPECT_TRUE(decodeCacheEntry(readFile(entry_), key_.text, &problem)) << problem;
  }

  std::string directory_;
  KernelProgram program_;
  CacheKey key_;
  std::string entry_;
};

TEST_F(KernelCacheDisk, MissThenMemoryHitThenDiskHit) {
  KernelCache cache;
  CompileStats stats;
  const auto first = cache.get(program_, options(), &stats);
  EXPECT_FALSE(stats.memoryHit);
  EXPECT_FALSE(stats.diskHit);
  EXPECT_GT(stats.milliseconds, 0);
  std::cout << "[ timing   ] cold compile: " << stats.milliseconds << " ms\n";
  expectValidEntry();
  EXPECT_EQ(listDirectory(), std::vector<std::string>{fs::path(entry_).filename().string()});
  expectComputesTestLayer(*first);

  const auto second = cache.get(program_, options(), &stats);
  EXPECT_TRUE(stats.memoryHit);
  EXPECT_FALSE(stats.diskHit);
  EXPECT_EQ(second.get(), first.get());

  constexpr int kMemoryRounds = 1000;
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < kMemoryRounds; ++round) cache.get(program_, options(), &stats);
  const double memoryMs =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() /
      kMemoryRounds;
  std::cout << "[ timing   ] memory hit: " << memoryMs << " ms (key from the program included)\n";

  KernelCache fresh;
  const auto fromDisk = fresh.get(program_, options(), &stats);
  EXPECT_FALSE(stats.memoryHit);
  EXPECT_TRUE(stats.diskHit);
  std::cout << "[ timing   ] disk hit: " << stats.milliseconds << " ms\n";
  expectComputesTestLayer(*fromDisk);

  cache.clearMemory();
  cache.get(program_, options(), &stats);
  EXPECT_TRUE(stats.diskHit);

  // Another dtype is another program: a miss with its own entry.
  fresh.get(forwardKernel(buildLayer(test::kCacheTestLayer), DType::F32), options(), &stats);
  EXPECT_FALSE(stats.memoryHit || stats.diskHit);
  EXPECT_EQ(listDirectory().size(), 2u);
}

// Damages a good entry, then checks that a new cache rebuilds and replaces it.
void checkRebuilt(const KernelProgram& program, const std::string& path,
                  const std::string& keyText, const CacheOptions& options,
                  const std::function<std::string(std::string)>& damage, const std::string& what) {
  SCOPED_TRACE(what);
  KernelCache().get(program, options);
  const std::string damaged = damage(readFile(path));
  writeFile(path, damaged);
  CompileStats stats;
  const auto kernel = KernelCache().get(program, options, &stats);
  EXPECT_FALSE(stats.diskHit) << "a damaged entry was used";
  EXPECT_FALSE(stats.memoryHit);
  const std::string replaced = readFile(path);
  EXPECT_NE(replaced, damaged);
  EXPECT_TRUE(decodeCacheEntry(replaced, keyText)) << "the entry was not rebuilt";
  expectComputesTestLayer(*kernel);
}

TEST_F(KernelCacheDisk, DamagedEntriesAreRebuiltAndReplaced) {
  const std::size_t headerEnd = 8 + 4 + 8 + key_.text.size() + 8 + 4;
  auto flipAt = [](std::size_t at) {
    return [at](std::string bytes) {
      bytes.at(at) = static_cast<char>(bytes.at(at) ^ 0x10);
      return bytes;
    };
  };
  checkRebuilt(program_, entry_, key_.text, options(),
               [](std::string bytes) { return bytes.substr(0, bytes.size() / 2); }, "truncated");
  checkRebuilt(program_, entry_, key_.text, options(),
               [](std::string) { return std::string(); }, "empty file");
  checkRebuilt(program_, entry_, key_.text, options(),
               [](std::string bytes) { return bytes.substr(0, bytes.size() - 1); },
               "last byte missing");
  checkRebuilt(program_, entry_, key_.text, options(), flipAt(headerEnd + 100),
               "payload byte flipped");
  checkRebuilt(program_, entry_, key_.text, options(),
               [](std::string bytes) {
                 bytes.back() = static_cast<char>(bytes.back() ^ 0x10);
                 return bytes;
               },
               "last payload byte flipped");
  checkRebuilt(program_, entry_, key_.text, options(), flipAt(2), "magic byte flipped");
  checkRebuilt(program_, entry_, key_.text, options(), flipAt(8), "version byte flipped");
  checkRebuilt(program_, entry_, key_.text, options(), flipAt(13),
               "key length byte flipped");
  checkRebuilt(program_, entry_, key_.text, options(), flipAt(20 + key_.text.size() / 2),
               "key text byte flipped");
  checkRebuilt(program_, entry_, key_.text, options(), flipAt(20 + key_.text.size() + 1),
               "payload length byte flipped");
  checkRebuilt(program_, entry_, key_.text, options(), flipAt(headerEnd - 2),
               "checksum byte flipped");

  // Another program's complete, valid entry stored under this key's name.
  const KernelProgram other = forwardKernel(buildLayer("lowrank(in=12, out=20, rank=3)"),
                                            DType::F64);
  const std::string otherEntry = encodeCacheEntry(cacheKey(other).text, compileToObject(other));
  checkRebuilt(program_, entry_, key_.text, options(),
               [&](std::string) { return otherEntry; }, "another key's entry");
  // A well-formed entry for this key whose object is garbage: the loader refuses it.
  checkRebuilt(program_, entry_, key_.text, options(),
               [&](std::string) { return encodeCacheEntry(key_.text, "not an object file"); },
               "garbage object under a valid header");
}

TEST_F(KernelCacheDisk, ConcurrentProcessesShareOneDirectory) {
  constexpr int kChildren = 4;
  const std::string barrier = directory_ + "-go";
  std::vector<pid_t> children;
  for (int k = 0; k < kChildren; ++k) {
    std::string executable = EINJIT_CACHE_CHILD;
    std::vector<char*> argv = {executable.data(), directory_.data(),
                               const_cast<char*>(barrier.c_str()), nullptr};
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, executable.c_str(), nullptr, nullptr, argv.data(), environ), 0);
    children.push_back(pid);
  }
  writeFile(barrier, "go");  // all children start compiling at once
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  }
  fs::remove(barrier);
  EXPECT_EQ(listDirectory(), std::vector<std::string>{fs::path(entry_).filename().string()})
      << "exactly one entry and no temporary files";
  expectValidEntry();
  CompileStats stats;
  const auto kernel = KernelCache().get(program_, options(), &stats);
  EXPECT_TRUE(stats.diskHit);
  expectComputesTestLayer(*kernel);
}

TEST_F(KernelCacheDisk, UnusableDirectoryStillCompiles) {
  // A directory below a regular file cannot be created, even by root.
  writeFile(directory_ + "/a-file", "x");
  const CacheOptions blocked{directory_ + "/a-file/cache", true};
  CompileStats stats;
  const auto kernel = KernelCache().get(program_, blocked, &stats);
  EXPECT_FALSE(stats.diskHit || stats.memoryHit);
  expectComputesTestLayer(*kernel);

  // Disk off: nothing is written.
  KernelCache().get(program_, {directory_ + "/unused", false}, &stats);
  EXPECT_FALSE(fs::exists(directory_ + "/unused"));
}

}  // namespace
}  // namespace einjit::cpu
