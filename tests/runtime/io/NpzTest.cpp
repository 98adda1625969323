#include <gtest/gtest.h>
#include <zlib.h>

#include <map>
#include <string>
#include <vector>

#include "runtime/io/IoDetail.h"
#include "runtime/io/Npy.h"
#include "tests/runtime/io/IoTestUtil.h"
#include "tests/runtime/io/Pattern.h"

namespace einjit {
namespace {

using testing::expectPatterned;
using testing::patterned;
using testing::TempDir;

void appendLE(std::string& out, uint64_t value, int width) {
  for (int i = 0; i < width; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}

uint64_t readLE(const std::string& bytes, std::size_t pos, int width) {
  uint64_t value = 0;
  for (int i = 0; i < width; ++i) value |= uint64_t{static_cast<unsigned char>(bytes[pos + i])} << (8 * i);
  return value;
}

void overwriteLE(std::string& bytes, std::size_t pos, uint64_t value, int width) {
  for (int i = 0; i < width; ++i) bytes[pos + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

// Offset of the central directory, read from the (plain) end-of-central-directory record.
std::size_t centralDirectoryOffset(const std::string& archive) { return readLE(archive, archive.size() - 22 + 16, 4); }

// A one-member stored archive using zip64 everywhere it can: saturated sizes in the local
// header and central directory, zip64 extra fields, and a zip64 end-of-central-directory
// record with its locator. Built independently of the code under test.
std::string zip64Archive(const std::string& name, const std::string& data) {
  const uint32_t crc = crc32(0, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size()));
  std::string out;
  appendLE(out, 0x04034b50, 4);
  appendLE(out, 45, 2);  // version needed: zip64
  appendLE(out, 0, 2);   // flags
  appendLE(out, 0, 2);   // stored
  appendLE(out, 0, 2);
  appendLE(out, 0x21, 2);
  appendLE(out, crc, 4);
  appendLE(out, 0xffffffff, 4);
  appendLE(out, 0xffffffff, 4);
  appendLE(out, name.size(), 2);
  appendLE(out, 20, 2);
  out += name;
  appendLE(out, 0x0001, 2);
  appendLE(out, 16, 2);
  appendLE(out, data.size(), 8);
  appendLE(out, data.size(), 8);
  out += data;

  const std::size_t centralOffset = out.size();
  appendLE(out, 0x02014b50, 4);
  appendLE(out, 45, 2);
  appendLE(out, 45, 2);
  appendLE(out, 0, 2);
  appendLE(out, 0, 2);
  appendLE(out, 0, 2);
  appendLE(out, 0x21, 2);
  appendLE(out, crc, 4);
  appendLE(out, 0xffffffff, 4);
  appendLE(out, 0xffffffff, 4);
  appendLE(out, name.size(), 2);
  appendLE(out, 28, 2);  // extra length
  appendLE(out, 0, 2);   // comment length
  appendLE(out, 0, 2);   // disk
  appendLE(out, 0, 2);   // internal attributes
  appendLE(out, 0, 4);   // external attributes
  appendLE(out, 0xffffffff, 4);
  out += name;
  appendLE(out, 0x0001, 2);
  appendLE(out, 24, 2);
  appendLE(out, data.size(), 8);  // uncompressed
  appendLE(out, data.size(), 8);  // compressed
  appendLE(out, 0, 8);            // local header offset
  const std::size_t centralSize = out.size() - centralOffset;

  const std::size_t zip64Record = out.size();
  appendLE(out, 0x06064b50, 4);
  appendLE(out, 44, 8);  // size of the rest of the record
  appendLE(out, 45, 2);
  appendLE(out, 45, 2);
  appendLE(out, 0, 4);
  appendLE(out, 0, 4);
  appendLE(out, 1, 8);
  appendLE(out, 1, 8);
  appendLE(out, centralSize, 8);
  appendLE(out, centralOffset, 8);

  appendLE(out, 0x07064b50, 4);
  appendLE(out, 0, 4);
  appendLE(out, zip64Record, 8);
  appendLE(out, 1, 4);

  appendLE(out, 0x06054b50, 4);
  appendLE(out, 0, 2);
  appendLE(out, 0, 2);
  appendLE(out, 0xffff, 2);
  appendLE(out, 0xffff, 2);
  appendLE(out, 0xffffffff, 4);
  appendLE(out, 0xffffffff, 4);
  appendLE(out, 0, 2);
  return out;
}

std::map<std::string, Tensor> sampleArrays() {
  std::map<std::string, Tensor> arrays;
  arrays["weight"] = patterned(DType::F32, {3, 4});
  arrays["bias"] = patterned(DType::F64, {4});
  arrays["scale"] = patterned(DType::F32, {});
  arrays["empty"] = patterned(DType::F64, {0, 2});
  arrays["layer.0/w"] = patterned(DType::F64, {2, 1, 3, 2});
  return arrays;
}

void expectSampleArrays(const std::map<std::string, Tensor>& arrays) {
  ASSERT_EQ(arrays.size(), 5u);
  for (const char* name : {"weight", "bias", "scale", "empty", "layer.0/w"})
    ASSERT_EQ(arrays.count(name), 1u) << "missing " << name;
  expectPatterned(arrays.at("weight"), DType::F32, {3, 4});
  expectPatterned(arrays.at("bias"), DType::F64, {4});
  expectPatterned(arrays.at("scale"), DType::F32, {});
  expectPatterned(arrays.at("empty"), DType::F64, {0, 2});
  expectPatterned(arrays.at("layer.0/w"), DType::F64, {2, 1, 3, 2});
}

TEST(NpzRoundTrip, ArraysSurviveWriteAndRead) {
  TempDir dir;
  writeNpz(dir.file("a.npz"), sampleArrays());
  expectSampleArrays(readNpz(dir.file("a.npz")));
  writeNpz(dir.file("none.npz"), {});
  EXPECT_TRUE(readNpz(dir.file("none.npz")).empty());
}

TEST(NpzRead, Zip64RecordsAndExtraFields) {
  const Tensor tensor = patterned(DType::F32, {2, 5});
  const std::map<std::string, Tensor> arrays = parseNpz(zip64Archive("x.npy", serializeNpy(tensor)), "z.npz");
  ASSERT_EQ(arrays.size(), 1u);
  expectPatterned(arrays.at("x"), DType::F32, {2, 5});
}

TEST(NpzNumpy, ReadsArchivesNumpyWrote) {
  SKIP_WITHOUT_NUMPY();
  TempDir dir;
  testing::expectPythonSucceeds(testing::kPythonPattern + R"(
d = sys.argv[1] + '/'
arrays = {'weight': values((3, 4), '<f4'), 'bias': values((4,), '<f8'), 'scale': values((), '<f4'),
          'empty': values((0, 2), '<f8'), 'layer.0/w': values((2, 1, 3, 2), '<f8')}
np.savez(d + 'stored.npz', **arrays)
np.savez_compressed(d + 'deflated.npz', **arrays)
np.savez_compressed(d + 'large.npz', big=values((100, 70), '<f8'), fortran=np.asfortranarray(values((6, 5), '<f4')))
with zipfile.ZipFile(d + 'stored.npz') as z:
    assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
with zipfile.ZipFile(d + 'deflated.npz') as z:
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
)",
                                {dir.path().string()});
  expectSampleArrays(readNpz(dir.file("stored.npz")));
  expectSampleArrays(readNpz(dir.file("deflated.npz")));
  const auto large = readNpz(dir.file("large.npz"));
  ASSERT_EQ(large.size(), 2u);
  expectPatterned(large.at("big"), DType::F64, {100, 70});
  expectPatterned(large.at("fortran"), DType::F32, {6, 5});
}

TEST(NpzNumpy, NumpyReadsArchivesEinjitWrote) {
  SKIP_WITHOUT_NUMPY();
  TempDir dir;
  writeNpz(dir.file("ours.npz"), sampleArrays());
  testing::writeBinaryFile(dir.file("zip64.npz"), zip64Archive("x.npy", serializeNpy(patterned(DType::F32, {2, 5}))));
  testing::expectPythonSucceeds(testing::kPythonPattern + R"(
d = sys.argv[1] + '/'
with zipfile.ZipFile(d + 'ours.npz') as z:
    assert z.testzip() is None
expected = {'weight': values((3, 4), '<f4'), 'bias': values((4,), '<f8'), 'scale': values((), '<f4'),
            'empty': values((0, 2), '<f8'), 'layer.0/w': values((2, 1, 3, 2), '<f8')}
with np.load(d + 'ours.npz') as f:
    assert sorted(f.files) == sorted(expected), f.files
    for name, want in expected.items():
        got = f[name]
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), name
# The hand-built zip64 archive the reader is tested on must itself be valid.
with np.load(d + 'zip64.npz') as f:
    assert f.files == ['x'] and np.array_equal(f['x'], values((2, 5), '<f4'))
)",
                                {dir.path().string()});
}

TEST(NpzMalformed, NotAnArchive) {
  EXPECT_USER_ERROR(parseNpz("", "e.npz"), "e.npz", "empty");
  EXPECT_USER_ERROR(parseNpz("just some text that is long enough to be a zip", "t.npz"), "t.npz",
                    "not an .npz archive");
  EXPECT_USER_ERROR(parseNpz(serializeNpy(patterned(DType::F32, {4, 4})), "n.npz"), "n.npz",
                    "a .npy file, not an .npz archive");
}

TEST(NpzMalformed, TruncatedOrDamagedStructure) {
  const std::string archive = serializeNpz({{"a", patterned(DType::F32, {2, 3})}});
  EXPECT_USER_ERROR(parseNpz(archive.substr(0, archive.size() - 5), "t.npz"), "t.npz", "truncated or damaged",
                    "end-of-central-directory");
  EXPECT_USER_ERROR(parseNpz(archive.substr(0, 40), "t.npz"), "truncated or damaged");

  std::string badDirectory = archive;
  overwriteLE(badDirectory, badDirectory.size() - 22 + 16, 0x7fffffff, 4);
  EXPECT_USER_ERROR(parseNpz(badDirectory, "d.npz"), "d.npz", "central directory lies outside the file");

  std::string badLocalOffset = archive;
  overwriteLE(badLocalOffset, centralDirectoryOffset(archive) + 42, archive.size() - 10, 4);
  EXPECT_USER_ERROR(parseNpz(badLocalOffset, "d.npz"), "local header of member 'a.npy' is missing");

  std::string badSize = archive;
  const std::size_t central = centralDirectoryOffset(archive);
  overwriteLE(badSize, central + 20, 0x100000, 4);
  overwriteLE(badSize, central + 24, 0x100000, 4);
  EXPECT_USER_ERROR(parseNpz(badSize, "d.npz"), "data of member 'a.npy' runs past the end of the file");
}

TEST(NpzMalformed, UnsupportedMemberFeatures) {
  const std::string archive = serializeNpz({{"a", patterned(DType::F32, {2, 3})}});
  const std::size_t central = centralDirectoryOffset(archive);

  std::string bzip2 = archive;
  overwriteLE(bzip2, 8, 12, 2);
  overwriteLE(bzip2, central + 10, 12, 2);
  EXPECT_USER_ERROR(parseNpz(bzip2, "m.npz"), "m.npz", "member 'a.npy' uses compression method 12",
                    "only stored (0");

  std::string encrypted = archive;
  overwriteLE(encrypted, central + 8, 1, 2);
  EXPECT_USER_ERROR(parseNpz(encrypted, "m.npz"), "member 'a.npy' is encrypted");
}

TEST(NpzMalformed, CrcMismatch) {
  std::string archive = serializeNpz({{"a", patterned(DType::F32, {2, 3})}});
  archive[centralDirectoryOffset(archive) - 1] ^= 0x40;  // last byte of the member's data
  EXPECT_USER_ERROR(parseNpz(archive, "c.npz"), "c.npz", "member 'a.npy'", "CRC-32 mismatch");
}

TEST(NpzMalformed, MemberThatIsNotNpy) {
  EXPECT_USER_ERROR(parseNpz(zip64Archive("bad.npy", "hello there"), "b.npz"), "b.npz, member 'bad.npy'",
                    "not a .npy file");
  const std::string fullNpy = serializeNpy(patterned(DType::F64, {3}));
  const std::string truncatedNpy = fullNpy.substr(0, fullNpy.size() - 4);
  EXPECT_USER_ERROR(parseNpz(zip64Archive("w.npy", truncatedNpy), "b.npz"), "member 'w.npy'", "truncated data");
}

TEST(NpzNumpy, DamagedDeflateStreams) {
  SKIP_WITHOUT_NUMPY();
  TempDir dir;
  testing::expectPythonSucceeds(testing::kPythonPattern + "np.savez_compressed(sys.argv[1], w=values((50,), '<f8'))",
                                {dir.file("c.npz")});
  const std::string archive = testing::readBinaryFile(dir.file("c.npz"));
  ASSERT_EQ(readLE(archive, 8, 2), 8u) << "numpy should have deflated the member";
  expectPatterned(parseNpz(archive, "c.npz").at("w"), DType::F64, {50});
  const std::size_t dataStart = 30 + readLE(archive, 26, 2) + readLE(archive, 28, 2);
  const std::size_t central = centralDirectoryOffset(archive);

  std::string invalidBlock = archive;
  invalidBlock[dataStart] = static_cast<char>(0xff);  // final block of the reserved type 3
  EXPECT_USER_ERROR(parseNpz(invalidBlock, "c.npz"), "c.npz", "compressed data of member 'w.npy' is corrupt");

  std::string cutShort = archive;  // the directory claims half the compressed bytes
  overwriteLE(cutShort, central + 20, readLE(archive, central + 20, 4) / 2, 4);
  EXPECT_USER_ERROR(parseNpz(cutShort, "c.npz"), "compressed data of member 'w.npy' is cut off");

  std::string tooSmall = archive;  // the directory claims fewer uncompressed bytes than there are
  overwriteLE(tooSmall, central + 24, readLE(archive, central + 24, 4) / 2, 4);
  EXPECT_USER_ERROR(parseNpz(tooSmall, "c.npz"), "decompresses to more than the recorded");

  std::string bomb = archive;  // an uncompressed size no deflate stream of this length can reach
  overwriteLE(bomb, central + 24, 0xfffffff0, 4);
  EXPECT_USER_ERROR(parseNpz(bomb, "c.npz"), "more than deflate can achieve");
}

TEST(NpzRead, FileErrorsNameTheFile) {
  TempDir dir;
  EXPECT_USER_ERROR(readNpz(dir.file("missing.npz")), "cannot read", dir.file("missing.npz").c_str());
  testing::writeBinaryFile(dir.file("text.npz"), "this is plainly not a zip archive at all");
  EXPECT_USER_ERROR(readNpz(dir.file("text.npz")), dir.file("text.npz").c_str(), "not an .npz archive");
}

}  // namespace
}  // namespace einjit
