#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <vector>

#include "runtime/io/Npy.h"
#include "tests/runtime/io/IoTestUtil.h"
#include "tests/runtime/io/Pattern.h"

namespace einjit {
namespace {

using testing::patterned;
using testing::TempDir;

TEST(AtomicWrite, ReplacesExistingFileCompletely) {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  testing::writeBinaryFile(path, std::string(1000, 'x'));
  writeFileAtomically(path, "short");
  EXPECT_EQ(testing::readBinaryFile(path), "short");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.bin"}) << "no temporary file may be left behind";
}

TEST(AtomicWrite, NewFileGetsOrdinaryPermissions) {
  TempDir dir;
  const mode_t previous = umask(022);
  writeNpy(dir.file("p.npy"), patterned(DType::F32, {2}));
  umask(previous);
  struct stat info {};
  ASSERT_EQ(stat(dir.file("p.npy").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0644u);
}

TEST(AtomicWrite, MissingDirectoryFailsWithoutOutput) {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/out.npy");
  EXPECT_USER_ERROR(writeNpy(path, patterned(DType::F32, {3})), "cannot write", path.c_str(), "No such file");
  EXPECT_USER_ERROR(writeNpz(dir.file("absent/a.npz"), {{"x", patterned(DType::F64, {2})}}), "cannot write",
                    "absent/a.npz");
  EXPECT_TRUE(dir.entries().empty());
}

TEST(AtomicWrite, TargetThatIsADirectoryFailsAndLeavesNoTemporaryFile) {
  TempDir dir;
  const std::string target = dir.file("target");
  std::filesystem::create_directory(target);
  EXPECT_USER_ERROR(writeNpy(target, patterned(DType::F32, {3})), "cannot write", target.c_str());
  EXPECT_USER_ERROR(writeNpz(target, {{"x", patterned(DType::F64, {2})}}), "cannot write", target.c_str());
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"target"});
  EXPECT_TRUE(std::filesystem::is_directory(target));
  EXPECT_TRUE(std::filesystem::is_empty(target));
}

TEST(AtomicWrite, FailedWriteKeepsThePreviousFile) {
  TempDir dir;
  const std::string path = dir.file("keep.npy");
  writeNpy(path, patterned(DType::F64, {4}));
  const std::string before = testing::readBinaryFile(path);
  // A non-empty directory cannot be renamed over, nor can a file replace one; make the
  // target's name a directory in a second location and check the first is untouched.
  const std::string blocked = dir.file("blocked");
  std::filesystem::create_directories(blocked + "/inner");
  EXPECT_USER_ERROR(writeNpy(blocked, patterned(DType::F64, {4})), "cannot write");
  EXPECT_EQ(testing::readBinaryFile(path), before);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"blocked", "keep.npy"}));
}

}  // namespace
}  // namespace einjit
