#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "runtime/io/Npy.h"
#include "tests/runtime/io/IoTestUtil.h"
#include "tests/runtime/io/Pattern.h"

namespace einjit {
namespace {

using namespace std::string_literals;
using testing::expectPatterned;
using testing::patterned;
using testing::TempDir;

const std::vector<Shape> kShapes = {{}, {0}, {3}, {1}, {2, 3}, {0, 5}, {4, 0, 2}, {2, 3, 4}, {2, 1, 3, 2}};

// A .npy file assembled by hand: preamble of version `major`.0, the header `dict` plus '\n'
// (no alignment padding), then `data`.
std::string npyFile(const std::string& dict, const std::string& data, int major = 1) {
  const std::string header = dict + "\n";
  std::string out = "\x93NUMPY"s;
  out += static_cast<char>(major);
  out += '\0';
  const int lengthBytes = major == 1 ? 2 : 4;
  for (int i = 0; i < lengthBytes; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string floatBytes(std::initializer_list<float> values) {
  std::string out(values.size() * sizeof(float), '\0');
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

std::string doubleBytes(std::initializer_list<double> values) {
  std::string out(values.size() * sizeof(double), '\0');
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

std::string dictFor(const std::string& descr, const std::string& shape, bool fortran = false) {
  return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': " + shape + ", }";
}

TEST(NpyRoundTrip, EveryRankAndBothDtypes) {
  TempDir dir;
  for (DType dtype : {DType::F32, DType::F64}) {
    for (const Shape& shape : kShapes) {
      SCOPED_TRACE(std::string(dtypeName(dtype)) + " " + shapeToString(shape));
      const std::string path = dir.file("t.npy");
      writeNpy(path, patterned(dtype, shape));
      expectPatterned(readNpy(path), dtype, shape);
    }
  }
}

TEST(NpySerialize, HeaderFollowsNumpyLayout) {
  struct Case {
    DType dtype;
    Shape shape;
    std::string dict;
  };
  const std::vector<Case> cases = {
      {DType::F32, {2, 3}, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"},
      {DType::F64, {7}, "{'descr': '<f8', 'fortran_order': False, 'shape': (7,), }"},
      {DType::F64, {}, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }"},
  };
  for (const Case& c : cases) {
    const Tensor tensor = patterned(c.dtype, c.shape);
    const std::string bytes = serializeNpy(tensor);
    ASSERT_EQ(bytes.substr(0, 8), "\x93NUMPY\x01\x00"s);
    const std::size_t headerLength = static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8;
    const std::size_t dataStart = 10 + headerLength;
    EXPECT_EQ(dataStart % 64, 0u) << "numpy aligns the data to 64 bytes";
    EXPECT_EQ(bytes.substr(10, c.dict.size()), c.dict);
    EXPECT_EQ(bytes[dataStart - 1], '\n');
    EXPECT_EQ(bytes.find_first_not_of(' ', 10 + c.dict.size()), dataStart - 1) << "padding is spaces";
    ASSERT_EQ(bytes.size(), dataStart + tensor.nbytes());
    EXPECT_EQ(bytes.substr(dataStart), std::string(static_cast<const char*>(tensor.raw()), tensor.nbytes()));
  }
}

TEST(NpyParse, FortranOrderMatrixBecomesCOrder) {
  // C order [[0, 1, 2], [3, 4, 5]] stored column by column.
  const Tensor tensor = parseNpy(npyFile(dictFor("<f8", "(2, 3)", true), doubleBytes({0, 3, 1, 4, 2, 5})), "m.npy");
  ASSERT_EQ(tensor.shape(), (Shape{2, 3}));
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(tensor.get(i), static_cast<double>(i));
}

TEST(NpyParse, FortranOrderRank3BecomesCOrder) {
  // Element (i, j, k) holds its C-order flat index and sits at i + 2 j + 6 k in Fortran order.
  std::vector<float> fortran(24);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) fortran[i + 2 * j + 6 * k] = static_cast<float>(i * 12 + j * 4 + k);
  std::string data(fortran.size() * sizeof(float), '\0');
  std::memcpy(data.data(), fortran.data(), data.size());
  const Tensor tensor = parseNpy(npyFile(dictFor("<f4", "(2, 3, 4)", true), data), "t.npy");
  ASSERT_EQ(tensor.shape(), (Shape{2, 3, 4}));
  for (int64_t i = 0; i < 24; ++i) EXPECT_EQ(tensor.get(i), static_cast<double>(i));
}

TEST(NpyParse, AcceptsHeaderVariants) {
  const std::string twoFloats = floatBytes({1.5f, -2.0f});
  const std::vector<std::string> dicts = {
      "{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}",        // other order, no trailing comma
      "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}",  // double quotes
      "{'descr':'=f4','fortran_order':False,'shape':(2,),}",            // native byte order, no spaces
      "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }   ",    // Fortran order of a vector
  };
  for (const std::string& dict : dicts) {
    SCOPED_TRACE(dict);
    const Tensor tensor = parseNpy(npyFile(dict, twoFloats), "v.npy");
    ASSERT_EQ(tensor.shape(), (Shape{2}));
    EXPECT_EQ(tensor.dtype(), DType::F32);
    EXPECT_EQ(tensor.get(0), 1.5);
    EXPECT_EQ(tensor.get(1), -2.0);
  }
  for (int major : {2, 3}) {
    const Tensor tensor = parseNpy(npyFile(dictFor("<f8", "(1, 1,)"), doubleBytes({4.25}), major), "v.npy");
    EXPECT_EQ(tensor.shape(), (Shape{1, 1}));
    EXPECT_EQ(tensor.get(0), 4.25);
  }
}

TEST(NpyParse, ScalarAndZeroSize) {
  const Tensor scalar = parseNpy(npyFile(dictFor("<f8", "()"), doubleBytes({-0.75})), "s.npy");
  EXPECT_EQ(scalar.shape(), Shape{});
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.get(0), -0.75);
  const Tensor empty = parseNpy(npyFile(dictFor("<f4", "(3, 0, 2)"), ""), "e.npy");
  EXPECT_EQ(empty.shape(), (Shape{3, 0, 2}));
  EXPECT_EQ(empty.numel(), 0);
}

TEST(NpyMalformed, Preamble) {
  EXPECT_USER_ERROR(parseNpy("", "x.npy"), "x.npy", "empty");
  EXPECT_USER_ERROR(parseNpy("hello, this is text", "x.npy"), "x.npy", "not a .npy file", "magic");
  EXPECT_USER_ERROR(parseNpy("PK\x03\x04 an archive", "x.npy"), "not a .npy file", "zip archive");
  EXPECT_USER_ERROR(parseNpy("\x93NUM", "x.npy"), "x.npy", "truncated");
  EXPECT_USER_ERROR(parseNpy("\x93NUMPY\x01"s, "x.npy"), "truncated");
  EXPECT_USER_ERROR(parseNpy("\x93NUMPY\x01\x00\x10"s, "x.npy"), "truncated", "header length");
  EXPECT_USER_ERROR(parseNpy("\x93NUMPY\x04\x00\x10\x00"s, "x.npy"), "unsupported .npy format version 4.0");
  EXPECT_USER_ERROR(parseNpy("\x93NUMPY\x01\x01\x10\x00"s, "x.npy"), "version 1.1");
}

TEST(NpyMalformed, TruncatedHeader) {
  const std::string full = npyFile(dictFor("<f4", "(2,)"), floatBytes({1, 2}));
  EXPECT_USER_ERROR(parseNpy(full.substr(0, 30), "x.npy"), "x.npy", "truncated header", "says 58 bytes",
                    "file has 20");
}

TEST(NpyMalformed, HeaderSyntax) {
  struct Case {
    std::string dict;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"['descr', '<f4']", "expected '{'"},
      {"{'descr': '<f4', 'fortran_order': False}", "missing key 'shape'"},
      {"{'fortran_order': False, 'shape': (2,)}", "missing key 'descr'"},
      {"{'descr': '<f4', 'shape': (2,)}", "missing key 'fortran_order'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", "unexpected key 'extra'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", "'descr' appears twice"},
      {"{'descr': '<f4', 'fortran_order': yes, 'shape': (2,)}", "expected True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2)}", "not a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [2]}", "expected '(' to start the tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, x)}", "expected an integer dimension"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}", "expected ','"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", "after the value of 'descr'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", "expected ','"},
      {"{'descr': '<f4", "unterminated string"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk", "unexpected text after the closing '}'"},
      {"{descr: '<f4'}", "expected a key"},
      {"{'descr': 4, 'fortran_order': False, 'shape': (2,)}", "expected a dtype string"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "does not fit in 64 bits"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.dict);
    EXPECT_USER_ERROR(parseNpy(npyFile(c.dict, floatBytes({1, 2})), "h.npy"), "h.npy", "malformed .npy header",
                      c.expected.c_str());
  }
}

TEST(NpyMalformed, UnsupportedDtypes) {
  EXPECT_USER_ERROR(parseNpy(npyFile(dictFor(">f8", "(1,)"), doubleBytes({1})), "b.npy"), "b.npy", "'>f8'",
                    "big-endian data is not supported");
  EXPECT_USER_ERROR(parseNpy(npyFile(dictFor(">f4", "(1,)"), floatBytes({1})), "b.npy"), "big-endian");
  EXPECT_USER_ERROR(parseNpy(npyFile(dictFor("<i4", "(1,)"), floatBytes({1})), "i.npy"), "i.npy",
                    "unsupported dtype '<i4'", "supported dtypes are '<f4' (float32) and '<f8' (float64)");
  EXPECT_USER_ERROR(parseNpy(npyFile(dictFor("|b1", "(4,)"), "abcd"), "i.npy"), "unsupported dtype '|b1'");
  EXPECT_USER_ERROR(
      parseNpy(npyFile("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", floatBytes({1})), "s.npy"),
      "s.npy", "structured arrays are not supported");
}

TEST(NpyMalformed, ShapeAgainstData) {
  EXPECT_USER_ERROR(parseNpy(npyFile(dictFor("<f4", "(2, 3)"), floatBytes({1, 2, 3, 4, 5})), "d.npy"), "d.npy",
                    "truncated data", "header says 24 bytes of data", "file has 20");
  EXPECT_USER_ERROR(parseNpy(npyFile(dictFor("<f4", "(2,)"), floatBytes({1, 2, 3})), "d.npy"),
                    "extra bytes after the data", "header says 8 bytes", "file has 12");
  EXPECT_USER_ERROR(parseNpy(npyFile(dictFor("<f8", "()"), ""), "d.npy"), "header says 8 bytes", "file has 0");
  EXPECT_USER_ERROR(parseNpy(npyFile(dictFor("<f4", "(0, 3)"), floatBytes({1})), "d.npy"), "extra bytes");
  EXPECT_USER_ERROR(parseNpy(npyFile(dictFor("<f4", "(-1, 3)"), floatBytes({1, 2, 3})), "d.npy"), "d.npy",
                    "negative dimension", "(-1, 3)");
  // Claims that must be rejected by comparing with the file size, before allocating.
  EXPECT_USER_ERROR(parseNpy(npyFile(dictFor("<f4", "(1000000000000,)"), floatBytes({1, 2})), "d.npy"),
                    "header says 4000000000000 bytes of data", "file has 8");
  EXPECT_USER_ERROR(parseNpy(npyFile(dictFor("<f8", "(4611686018427387904,)"), floatBytes({1})), "d.npy"),
                    "absurdly large");
  EXPECT_USER_ERROR(parseNpy(npyFile(dictFor("<f4", "(4294967296, 4294967296, 4)"), floatBytes({1})), "d.npy"),
                    "d.npy", "overflows int64");
}

TEST(NpyRead, FileErrorsNameTheFile) {
  TempDir dir;
  const std::string missing = dir.file("missing.npy");
  EXPECT_USER_ERROR(readNpy(missing), "cannot read", missing.c_str(), "No such file");
  EXPECT_USER_ERROR(readNpy(dir.path().string()), "is a directory");
  const std::string bad = dir.file("bad.npy");
  testing::writeBinaryFile(bad, "not numpy at all");
  EXPECT_USER_ERROR(readNpy(bad), bad.c_str(), "not a .npy file");
}

// Files written by numpy itself, generated at run time.
TEST(NpyNumpy, ReadsFilesNumpyWrote) {
  SKIP_WITHOUT_NUMPY();
  TempDir dir;
  testing::expectPythonSucceeds(testing::kPythonPattern + R"(
d = sys.argv[1] + '/'
np.save(d + 'f32.npy', values((2, 3), '<f4'))
np.save(d + 'f64_4d.npy', values((2, 1, 3, 2), '<f8'))
np.save(d + 'vector.npy', values((7,), '<f4'))
np.save(d + 'scalar.npy', values((), '<f8'))
np.save(d + 'empty.npy', values((0, 3), '<f4'))
np.save(d + 'fortran.npy', np.asfortranarray(values((3, 4, 5), '<f8')))
for version in [(2, 0), (3, 0)]:
    with open(d + 'v%d.npy' % version[0], 'wb') as f:
        np.lib.format.write_array(f, values((5, 2), '<f4'), version=version)
)",
                                {dir.path().string()});
  expectPatterned(readNpy(dir.file("f32.npy")), DType::F32, {2, 3});
  expectPatterned(readNpy(dir.file("f64_4d.npy")), DType::F64, {2, 1, 3, 2});
  expectPatterned(readNpy(dir.file("vector.npy")), DType::F32, {7});
  expectPatterned(readNpy(dir.file("scalar.npy")), DType::F64, {});
  expectPatterned(readNpy(dir.file("empty.npy")), DType::F32, {0, 3});
  ASSERT_NE(testing::readBinaryFile(dir.file("fortran.npy")).find("'fortran_order': True"), std::string::npos);
  expectPatterned(readNpy(dir.file("fortran.npy")), DType::F64, {3, 4, 5});
  ASSERT_EQ(testing::readBinaryFile(dir.file("v2.npy"))[6], '\x02');
  expectPatterned(readNpy(dir.file("v2.npy")), DType::F32, {5, 2});
  ASSERT_EQ(testing::readBinaryFile(dir.file("v3.npy"))[6], '\x03');
  expectPatterned(readNpy(dir.file("v3.npy")), DType::F32, {5, 2});
}

TEST(NpyNumpy, RejectsUnsupportedFilesNumpyWrote) {
  SKIP_WITHOUT_NUMPY();
  TempDir dir;
  testing::expectPythonSucceeds(testing::kPythonPattern + R"(
d = sys.argv[1] + '/'
np.save(d + 'big_f8.npy', values((3,), '>f8'))
np.save(d + 'big_f4.npy', values((3,), '>f4'))
np.save(d + 'int32.npy', np.arange(4, dtype='<i4'))
np.save(d + 'half.npy', values((3,), '<f2'))
)",
                                {dir.path().string()});
  EXPECT_USER_ERROR(readNpy(dir.file("big_f8.npy")), dir.file("big_f8.npy").c_str(), "big-endian");
  EXPECT_USER_ERROR(readNpy(dir.file("big_f4.npy")), "'>f4'", "big-endian");
  EXPECT_USER_ERROR(readNpy(dir.file("int32.npy")), dir.file("int32.npy").c_str(), "'<i4'", "'<f4' (float32)");
  EXPECT_USER_ERROR(readNpy(dir.file("half.npy")), "'<f2'", "supported dtypes");
}

TEST(NpyNumpy, NumpyReadsFilesEinjitWrote) {
  SKIP_WITHOUT_NUMPY();
  TempDir dir;
  std::vector<std::string> args;
  int index = 0;
  for (DType dtype : {DType::F32, DType::F64}) {
    for (const Shape& shape : kShapes) {
      const std::string path = dir.file(std::to_string(index++) + ".npy");
      writeNpy(path, patterned(dtype, shape));
      std::string dims;
      for (int64_t d : shape) dims += std::to_string(d) + ",";
      args.push_back(path + ":" + (dtype == DType::F32 ? "<f4" : "<f8") + ":" + dims);
    }
  }
  testing::expectPythonSucceeds(testing::kPythonPattern + R"(
for arg in sys.argv[1:]:
    path, dtype, dims = arg.split(':')
    arr = np.load(path)
    assert arr.dtype == np.dtype(dtype), (path, arr.dtype)
    assert arr.shape == shape_of(dims), (path, arr.shape)
    assert np.array_equal(arr, values(shape_of(dims), dtype)), path
    with open(path, 'rb') as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        assert f.tell() % 64 == 0, (path, f.tell())
)",
                                args);
}

}  // namespace
}  // namespace einjit
