#include "runtime/io/Npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <system_error>

#include "einjit/error.h"
#include "runtime/io/IoDetail.h"

namespace einjit {

// .npy data is read and written by memcpy; the supported dtypes are little-endian.
static_assert(std::endian::native == std::endian::little, "einjit's .npy I/O assumes a little-endian host");

namespace {

constexpr std::string_view kMagic = "\x93NUMPY";
constexpr std::size_t kArrayAlign = 64;  // numpy aligns the start of the data to 64 bytes

std::string errnoText(int error) { return std::generic_category().message(error); }

// Header text for messages: printable, escaped, and cut to a readable length.
std::string quoteForMessage(std::string_view text) {
  constexpr std::size_t kMaxShown = 120;
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c >= 0x7f) {
      static const char* const kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > kMaxShown) out += "...";
  return out;
}

struct NpyHeader {
  DType dtype = DType::F32;
  bool fortranOrder = false;
  Shape shape;
};

// Parses the header of a .npy file: a Python dict literal with exactly the keys 'descr',
// 'fortran_order' and 'shape', in any order, followed by padding whitespace.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& what) : text_(text), what_(what) {}

  NpyHeader parse() {
    std::optional<std::string> descr;
    std::optional<bool> fortranOrder;
    std::optional<Shape> shape;

    skipSpaces();
    expect('{', "at the start of the header");
    while (true) {
      skipSpaces();
      if (consume('}')) break;
      const std::string key = parseString("a key such as 'descr'");
      skipSpaces();
      expect(':', "after the key '" + key + "'");
      skipSpaces();
      if (key == "descr") {
        if (descr) fail("the key 'descr' appears twice");
        if (peek() == '[')
          throw UserError(what_ + ": unsupported dtype: structured arrays are not supported; "
                                  "supported dtypes are '<f4' (float32) and '<f8' (float64)");
        descr = parseString("a dtype string such as '<f4' for 'descr'");
      } else if (key == "fortran_order") {
        if (fortranOrder) fail("the key 'fortran_order' appears twice");
        fortranOrder = parseBool();
      } else if (key == "shape") {
        if (shape) fail("the key 'shape' appears twice");
        shape = parseShape();
      } else {
        fail("unexpected key '" + key + "' (a .npy header has exactly 'descr', 'fortran_order' and 'shape')");
      }
      skipSpaces();
      if (consume('}')) break;
      expect(',', "or '}' after the value of '" + key + "'");
    }
    skipSpaces();
    if (pos_ != text_.size()) fail("unexpected text after the closing '}'");
    if (!descr) fail("missing key 'descr'");
    if (!fortranOrder) fail("missing key 'fortran_order'");
    if (!shape) fail("missing key 'shape'");

    NpyHeader header;
    header.dtype = dtypeFromDescr(*descr);
    header.fortranOrder = *fortranOrder;
    header.shape = std::move(*shape);
    return header;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw UserError(what_ + ": malformed .npy header: " + problem + " (at offset " + std::to_string(pos_) +
                    " of the header \"" + quoteForMessage(text_) + "\")");
  }

  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  bool consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void expect(char c, const std::string& context) {
    if (!consume(c)) fail(std::string("expected '") + c + "' " + context);
  }

  void skipSpaces() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\r'))
      ++pos_;
  }

  // A Python string literal in single or double quotes, without escape sequences.
  std::string parseString(const std::string& expected) {
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected " + expected);
    ++pos_;
    const std::size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\') fail("escape sequences in strings are not supported");
      if (text_[pos_] == '\n') break;
      ++pos_;
    }
    if (pos_ >= text_.size() || text_[pos_] != quote) fail("unterminated string");
    std::string value(text_.substr(start, pos_ - start));
    ++pos_;
    return value;
  }

  bool parseBool() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    fail("expected True or False for 'fortran_order'");
  }

  // A tuple of integers: "()", "(3,)", "(2, 3)", "(2, 3,)".
  Shape parseShape() {
    expect('(', "to start the tuple of 'shape'");
    Shape shape;
    skipSpaces();
    if (consume(')')) return shape;
    while (true) {
      shape.push_back(parseDimension());
      skipSpaces();
      if (consume(')')) {
        if (shape.size() == 1) fail("'shape' is (n), which is not a tuple; a 1-tuple is written (n,)");
        return shape;
      }
      expect(',', "or ')' after a dimension of 'shape'");
      skipSpaces();
      if (consume(')')) return shape;
    }
  }

  int64_t parseDimension() {
    const bool negative = consume('-');
    if (peek() < '0' || peek() > '9') fail("expected an integer dimension in 'shape'");
    int64_t value = 0;
    while (peek() >= '0' && peek() <= '9') {
      const int digit = peek() - '0';
      if (value > (std::numeric_limits<int64_t>::max() - digit) / 10)
        fail("a dimension in 'shape' does not fit in 64 bits");
      value = value * 10 + digit;
      ++pos_;
    }
    return negative ? -value : value;
  }

  DType dtypeFromDescr(const std::string& descr) const {
    if (descr == "<f4" || descr == "=f4" || descr == "f4") return DType::F32;
    if (descr == "<f8" || descr == "=f8" || descr == "f8") return DType::F64;
    if (descr == ">f4" || descr == ">f8")
      throw UserError(what_ + ": unsupported dtype '" + descr +
                      "': big-endian data is not supported; save it as little-endian ('<" + descr.substr(1) +
                      "'), e.g. with numpy's arr.astype('<" + descr.substr(1) + "')");
    throw UserError(what_ + ": unsupported dtype '" + quoteForMessage(descr) +
                    "'; supported dtypes are '<f4' (float32) and '<f8' (float64)");
  }

  std::string_view text_;
  const std::string& what_;
  std::size_t pos_ = 0;
};

// Copies Fortran-order (column-major) data into a C-order tensor.
void copyFromFortranOrder(const char* source, Tensor& out) {
  const Shape& shape = out.shape();
  const std::size_t itemSize = dtypeSize(out.dtype());
  const std::size_t rank = shape.size();
  // In Fortran order the first axis is contiguous.
  std::vector<int64_t> fortranStride(rank);
  int64_t stride = 1;
  for (std::size_t axis = 0; axis < rank; ++axis) {
    fortranStride[axis] = stride;
    stride *= shape[axis];
  }
  // Decompose each C-order index into its multi-index and locate that element in the source.
  char* target = static_cast<char*>(out.raw());
  for (int64_t flat = 0; flat < out.numel(); ++flat) {
    int64_t rest = flat;
    int64_t sourceOffset = 0;
    for (std::size_t axis = rank; axis-- > 0;) {
      sourceOffset += rest % shape[axis] * fortranStride[axis];
      rest /= shape[axis];
    }
    std::memcpy(target + flat * itemSize, source + sourceOffset * itemSize, itemSize);
  }
}

uint32_t readLittleEndian(std::string_view bytes, std::size_t pos, std::size_t width) {
  uint32_t value = 0;
  for (std::size_t i = 0; i < width; ++i) value |= uint32_t{static_cast<unsigned char>(bytes[pos + i])} << (8 * i);
  return value;
}

void appendLittleEndian(std::string& out, uint32_t value, std::size_t width) {
  for (std::size_t i = 0; i < width; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}

}  // namespace

Tensor parseNpy(const std::string& bytes, const std::string& what) {
  if (bytes.empty()) throw UserError(what + ": empty file, not a .npy file");
  if (bytes.compare(0, kMagic.size(), kMagic.substr(0, std::min(bytes.size(), kMagic.size()))) != 0) {
    if (bytes.compare(0, 4, "PK\x03\x04") == 0)
      throw UserError(what + ": not a .npy file: it is a zip archive, probably an .npz");
    throw UserError(what + ": not a .npy file (it does not start with the magic \"\\x93NUMPY\")");
  }
  if (bytes.size() < kMagic.size() + 2)
    throw UserError(what + ": truncated .npy file: it ends inside the preamble (" + std::to_string(bytes.size()) +
                    " bytes)");

  const int major = static_cast<unsigned char>(bytes[6]);
  const int minor = static_cast<unsigned char>(bytes[7]);
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    throw UserError(what + ": unsupported .npy format version " + std::to_string(major) + "." +
                    std::to_string(minor) + " (supported: 1.0, 2.0, 3.0)");
  const std::size_t lengthWidth = major == 1 ? 2 : 4;
  const std::size_t headerStart = kMagic.size() + 2 + lengthWidth;
  if (bytes.size() < headerStart)
    throw UserError(what + ": truncated .npy file: it ends inside the header length field");
  const std::size_t headerLength = readLittleEndian(bytes, kMagic.size() + 2, lengthWidth);
  if (bytes.size() - headerStart < headerLength)
    throw UserError(what + ": truncated header: the header length field says " + std::to_string(headerLength) +
                    " bytes, the file has " + std::to_string(bytes.size() - headerStart) + " after the preamble");

  const NpyHeader header =
      HeaderParser(std::string_view(bytes).substr(headerStart, headerLength), what).parse();
  for (int64_t dim : header.shape)
    if (dim < 0) throw UserError(what + ": negative dimension in shape " + shapeToString(header.shape));

  int64_t numel = 0;
  try {
    numel = shapeNumel(header.shape);
  } catch (const UserError& error) {
    throw UserError(what + ": " + error.what());
  }
  // Compare the size the header claims with the file before allocating anything.
  const std::size_t itemSize = dtypeSize(header.dtype);
  const std::size_t dataStart = headerStart + headerLength;
  const std::size_t available = bytes.size() - dataStart;
  const std::string described = "shape " + shapeToString(header.shape) + ", " + dtypeName(header.dtype);
  if (numel > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(itemSize))
    throw UserError(what + ": header describes an absurdly large array (" + described +
                    ", more than 2^63 bytes); the file has " + std::to_string(available) + " bytes of data");
  const std::size_t expected = static_cast<std::size_t>(numel) * itemSize;
  if (available < expected)
    throw UserError(what + ": truncated data: header says " + std::to_string(expected) + " bytes of data (" +
                    described + "), file has " + std::to_string(available));
  if (available > expected)
    throw UserError(what + ": extra bytes after the data: header says " + std::to_string(expected) +
                    " bytes of data (" + described + "), file has " + std::to_string(available) +
                    " (the header does not describe the data)");

  Tensor tensor(header.dtype, header.shape);
  if (header.fortranOrder && tensor.rank() > 1)
    copyFromFortranOrder(bytes.data() + dataStart, tensor);
  else if (expected > 0)
    std::memcpy(tensor.raw(), bytes.data() + dataStart, expected);
  return tensor;
}

std::string serializeNpy(const Tensor& tensor) {
  const char* descr = tensor.dtype() == DType::F32 ? "<f4" : "<f8";
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " +
                     shapeToString(tensor.shape()) + ", }";
  // Version 1.0 has a 16-bit header length; only headers of enormous rank need 2.0.
  std::size_t lengthWidth = 2;
  auto paddedLength = [&] {
    const std::size_t unpadded = kMagic.size() + 2 + lengthWidth + dict.size() + 1;  // + '\n'
    return dict.size() + 1 + (kArrayAlign - unpadded % kArrayAlign) % kArrayAlign;
  };
  if (paddedLength() > std::numeric_limits<uint16_t>::max()) lengthWidth = 4;
  const std::size_t headerLength = paddedLength();
  if (headerLength > std::numeric_limits<uint32_t>::max())
    throw UserError("cannot write a tensor of rank " + std::to_string(tensor.rank()) + " to .npy: header too long");

  std::string out;
  out.reserve(kMagic.size() + 2 + lengthWidth + headerLength + tensor.nbytes());
  out += kMagic;
  out += static_cast<char>(lengthWidth == 2 ? 1 : 2);
  out += '\0';
  appendLittleEndian(out, static_cast<uint32_t>(headerLength), lengthWidth);
  out += dict;
  out.append(headerLength - dict.size() - 1, ' ');
  out += '\n';
  out.append(static_cast<const char*>(tensor.raw()), tensor.nbytes());
  return out;
}

std::string readFileBytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw UserError("cannot read '" + path + "': " + errnoText(errno));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  struct stat info {};
  if (::fstat(fd, &info) != 0) throw UserError("cannot read '" + path + "': " + errnoText(errno));
  if (S_ISDIR(info.st_mode)) throw UserError("cannot read '" + path + "': it is a directory");
  std::string contents;
  if (S_ISREG(info.st_mode)) contents.reserve(static_cast<std::size_t>(info.st_size));
  char buffer[1 << 16];
  while (true) {
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got == 0) break;
    if (got < 0) {
      if (errno == EINTR) continue;
      throw UserError("cannot read '" + path + "': " + errnoText(errno));
    }
    contents.append(buffer, static_cast<std::size_t>(got));
  }
  return contents;
}

Tensor readNpy(const std::string& path) { return parseNpy(readFileBytes(path), path); }

void writeNpy(const std::string& path, const Tensor& tensor) { writeFileAtomically(path, serializeNpy(tensor)); }

void writeFileAtomically(const std::string& path, const std::string& contents) {
  auto failure = [&](const std::string& problem) { return UserError("cannot write '" + path + "': " + problem); };

  // A fresh name next to the target, so that the final rename stays within one file system.
  static std::atomic<unsigned> counter{0};
  std::string tempPath;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    tempPath = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    fd = ::open(tempPath.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt >= 100))
      throw failure("cannot create the temporary file '" + tempPath + "': " + errnoText(errno));
  }

  // Removes the temporary file unless it was renamed over the target.
  struct TempFile {
    int fd;
    const std::string& path;
    bool renamed = false;
    ~TempFile() {
      if (fd >= 0) ::close(fd);
      if (!renamed) ::unlink(path.c_str());
    }
  } temp{fd, tempPath};

  std::size_t written = 0;
  while (written < contents.size()) {
    const ssize_t put = ::write(temp.fd, contents.data() + written, contents.size() - written);
    if (put < 0) {
      if (errno == EINTR) continue;
      throw failure(errnoText(errno));
    }
    written += static_cast<std::size_t>(put);
  }
  if (::fsync(temp.fd) != 0) throw failure(errnoText(errno));
  const int closeResult = ::close(temp.fd);
  temp.fd = -1;
  if (closeResult != 0) throw failure(errnoText(errno));
  if (::rename(tempPath.c_str(), path.c_str()) != 0) throw failure(errnoText(errno));
  temp.renamed = true;
}

}  // namespace einjit
