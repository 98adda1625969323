// .npz archives are zip files with one .npy member per array. Reading goes through the
// central directory (with its zip64 extensions, which numpy's savez always requests) and
// supports stored and deflated members; writing produces stored members, like np.savez.
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string_view>

#include "einjit/error.h"
#include "runtime/io/IoDetail.h"
#include "runtime/io/Npy.h"

namespace einjit {

namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEndOfCentralDirSignature = 0x06054b50;
constexpr uint32_t kZip64EndOfCentralDirSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr uint16_t kZip64ExtraFieldId = 0x0001;

constexpr std::size_t kLocalHeaderSize = 30;
constexpr std::size_t kCentralHeaderSize = 46;
constexpr std::size_t kEndOfCentralDirSize = 22;
constexpr std::size_t kZip64EndOfCentralDirSize = 56;
constexpr std::size_t kZip64LocatorSize = 20;
constexpr std::size_t kMaxCommentSize = 0xffff;

constexpr uint16_t kMethodStored = 0;
constexpr uint16_t kMethodDeflate = 8;
constexpr uint16_t kFlagEncrypted = 0x0001;
constexpr uint16_t kFlagUtf8Name = 0x0800;

// Deflate cannot compress better than about 1032:1; a member claiming more is damaged, and
// believing it would let a tiny file request an enormous allocation.
constexpr uint64_t kMaxDeflateRatio = 1032;

constexpr std::string_view kNpyMagic = "\x93NUMPY";

// One member as the central directory describes it.
struct MemberEntry {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t compressedSize = 0;
  uint64_t uncompressedSize = 0;
  uint64_t localHeaderOffset = 0;
};

class ZipReader {
 public:
  ZipReader(const std::string& bytes, const std::string& what) : bytes_(bytes), what_(what) {}

  std::map<std::string, Tensor> readAll() {
    std::map<std::string, Tensor> arrays;
    for (const MemberEntry& entry : readCentralDirectory()) {
      const std::string data = memberData(entry);
      const bool hasSuffix = entry.name.size() >= 4 && entry.name.compare(entry.name.size() - 4, 4, ".npy") == 0;
      const std::string arrayName = hasSuffix ? entry.name.substr(0, entry.name.size() - 4) : entry.name;
      Tensor tensor = parseNpy(data, what_ + ", member '" + entry.name + "'");
      if (!arrays.emplace(arrayName, std::move(tensor)).second)
        fail("the array '" + arrayName + "' appears twice");
    }
    return arrays;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const { throw UserError(what_ + ": " + problem); }

  [[noreturn]] void failDamaged(const std::string& problem) const {
    fail("truncated or damaged .npz (zip) archive: " + problem);
  }

  // True when [offset, offset + size) lies inside the file.
  bool inFile(uint64_t offset, uint64_t size) const {
    return offset <= bytes_.size() && size <= bytes_.size() - offset;
  }

  uint64_t readLittleEndian(uint64_t offset, std::size_t width) const {
    if (!inFile(offset, width)) failDamaged("a record at offset " + std::to_string(offset) + " runs past the end");
    uint64_t value = 0;
    for (std::size_t i = 0; i < width; ++i)
      value |= uint64_t{static_cast<unsigned char>(bytes_[offset + i])} << (8 * i);
    return value;
  }
  uint16_t u16(uint64_t offset) const { return static_cast<uint16_t>(readLittleEndian(offset, 2)); }
  uint32_t u32(uint64_t offset) const { return static_cast<uint32_t>(readLittleEndian(offset, 4)); }
  uint64_t u64(uint64_t offset) const { return readLittleEndian(offset, 8); }

  [[noreturn]] void failNotZip() const {
    if (bytes_.empty()) fail("empty file, not an .npz archive");
    if (bytes_.compare(0, kNpyMagic.size(), kNpyMagic) == 0) fail("this is a .npy file, not an .npz archive");
    if (bytes_.compare(0, 2, "PK") == 0) failDamaged("no end-of-central-directory record");
    fail("not an .npz archive (an .npz file is a zip archive, and this file has no zip signature)");
  }

  // The end-of-central-directory record sits at the very end, followed only by its comment.
  std::size_t findEndOfCentralDirectory() const {
    if (bytes_.size() < kEndOfCentralDirSize) failNotZip();
    const std::size_t last = bytes_.size() - kEndOfCentralDirSize;
    const std::size_t first = last > kMaxCommentSize ? last - kMaxCommentSize : 0;
    for (std::size_t pos = last + 1; pos-- > first;) {
      if (u32(pos) == kEndOfCentralDirSignature && pos + kEndOfCentralDirSize + u16(pos + 20) == bytes_.size())
        return pos;
    }
    failNotZip();
  }

  std::vector<MemberEntry> readCentralDirectory() const {
    const std::size_t end = findEndOfCentralDirectory();
    uint64_t diskNumber = u16(end + 4);
    uint64_t centralDirDisk = u16(end + 6);
    uint64_t entryCount = u16(end + 10);
    uint64_t centralDirSize = u32(end + 12);
    uint64_t centralDirOffset = u32(end + 16);

    // A zip64 locator directly before the record points at the zip64 record with 64-bit fields.
    if (end >= kZip64LocatorSize && u32(end - kZip64LocatorSize) == kZip64LocatorSignature) {
      const uint64_t locator = end - kZip64LocatorSize;
      const uint64_t record = u64(locator + 8);
      if (!inFile(record, kZip64EndOfCentralDirSize) || u32(record) != kZip64EndOfCentralDirSignature)
        failDamaged("the zip64 end-of-central-directory record is missing");
      diskNumber = u32(record + 16);
      centralDirDisk = u32(record + 20);
      entryCount = u64(record + 32);
      centralDirSize = u64(record + 40);
      centralDirOffset = u64(record + 48);
    }
    if (diskNumber != 0 || centralDirDisk != 0) fail("multi-part (split) zip archives are not supported");
    if (!inFile(centralDirOffset, centralDirSize) || centralDirOffset + centralDirSize > end)
      failDamaged("the central directory lies outside the file");

    std::vector<MemberEntry> entries;
    uint64_t pos = centralDirOffset;
    const uint64_t centralDirEnd = centralDirOffset + centralDirSize;
    for (uint64_t i = 0; i < entryCount; ++i) {
      if (centralDirEnd - pos < kCentralHeaderSize || u32(pos) != kCentralHeaderSignature)
        failDamaged("central directory entry " + std::to_string(i) + " is missing");
      MemberEntry entry;
      entry.flags = u16(pos + 8);
      entry.method = u16(pos + 10);
      entry.crc = u32(pos + 16);
      entry.compressedSize = u32(pos + 20);
      entry.uncompressedSize = u32(pos + 24);
      const uint16_t nameLength = u16(pos + 28);
      const uint16_t extraLength = u16(pos + 30);
      const uint16_t commentLength = u16(pos + 32);
      const uint16_t startDisk = u16(pos + 34);
      entry.localHeaderOffset = u32(pos + 42);
      const uint64_t entrySize = kCentralHeaderSize + nameLength + extraLength + commentLength;
      if (centralDirEnd - pos < entrySize) failDamaged("central directory entry " + std::to_string(i) + " is cut off");
      entry.name = bytes_.substr(pos + kCentralHeaderSize, nameLength);
      applyZip64Extra(entry, startDisk, pos + kCentralHeaderSize + nameLength, extraLength);
      entries.push_back(std::move(entry));
      pos += entrySize;
    }
    return entries;
  }

  // Fields saturated at 0xffffffff (0xffff for the disk) are stored in the zip64 extra field,
  // as 64-bit values in a fixed order, present only for the saturated fields.
  void applyZip64Extra(MemberEntry& entry, uint16_t startDisk, uint64_t extra, uint16_t extraLength) const {
    const bool needsUncompressed = entry.uncompressedSize == 0xffffffff;
    const bool needsCompressed = entry.compressedSize == 0xffffffff;
    const bool needsOffset = entry.localHeaderOffset == 0xffffffff;
    if (!needsUncompressed && !needsCompressed && !needsOffset) {
      if (startDisk != 0) fail("multi-part (split) zip archives are not supported");
      return;
    }
    uint64_t pos = extra;
    const uint64_t extraEnd = extra + extraLength;
    while (extraEnd - pos >= 4) {
      const uint16_t id = u16(pos);
      const uint16_t size = u16(pos + 2);
      const uint64_t data = pos + 4;
      if (extraEnd - data < size) break;
      if (id == kZip64ExtraFieldId) {
        uint64_t field = data;
        auto next = [&](uint64_t& value) {
          if (data + size - field < 8) failDamaged("the zip64 extra field of '" + entry.name + "' is too short");
          value = u64(field);
          field += 8;
        };
        if (needsUncompressed) next(entry.uncompressedSize);
        if (needsCompressed) next(entry.compressedSize);
        if (needsOffset) next(entry.localHeaderOffset);
        if (startDisk == 0xffff) {
          if (data + size - field < 4) failDamaged("the zip64 extra field of '" + entry.name + "' is too short");
          if (u32(field) != 0) fail("multi-part (split) zip archives are not supported");
        } else if (startDisk != 0) {
          fail("multi-part (split) zip archives are not supported");
        }
        return;
      }
      pos = data + size;
    }
    failDamaged("member '" + entry.name + "' needs a zip64 extra field and has none");
  }

  // The uncompressed, CRC-checked contents of one member.
  std::string memberData(const MemberEntry& entry) const {
    const std::string member = "member '" + entry.name + "'";
    if (entry.flags & kFlagEncrypted) fail(member + " is encrypted, which is not supported");
    if (entry.method != kMethodStored && entry.method != kMethodDeflate)
      fail(member + " uses compression method " + std::to_string(entry.method) +
           "; only stored (0, np.savez) and deflate (8, np.savez_compressed) are supported");

    const uint64_t local = entry.localHeaderOffset;
    if (!inFile(local, kLocalHeaderSize) || u32(local) != kLocalHeaderSignature)
      failDamaged("the local header of " + member + " is missing");
    const uint64_t dataStart = local + kLocalHeaderSize + u16(local + 26) + u16(local + 28);
    if (!inFile(dataStart, entry.compressedSize))
      failDamaged("the data of " + member + " runs past the end of the file");
    const std::string_view compressed = std::string_view(bytes_).substr(dataStart, entry.compressedSize);

    std::string data;
    if (entry.method == kMethodStored) {
      if (entry.compressedSize != entry.uncompressedSize)
        failDamaged(member + " is stored but its recorded sizes differ");
      data = std::string(compressed);
    } else {
      data = inflateMember(compressed, entry, member);
    }

    const uint32_t crc = static_cast<uint32_t>(
        crc32_z(crc32_z(0, nullptr, 0), reinterpret_cast<const Bytef*>(data.data()), data.size()));
    if (crc != entry.crc)
      fail(member + ": CRC-32 mismatch (the archive records " + hex(entry.crc) + ", the data has " + hex(crc) +
           "); the file is damaged");
    return data;
  }

  std::string inflateMember(std::string_view compressed, const MemberEntry& entry, const std::string& member) const {
    if (entry.uncompressedSize / kMaxDeflateRatio > compressed.size())
      failDamaged(member + " claims " + std::to_string(entry.uncompressedSize) + " bytes uncompressed from " +
                  std::to_string(compressed.size()) + " compressed, more than deflate can achieve");

    z_stream stream{};
    if (inflateInit2(&stream, -MAX_WBITS) != Z_OK) fail("cannot initialise zlib to decompress " + member);
    struct StreamEnder {
      z_stream& stream;
      ~StreamEnder() { inflateEnd(&stream); }
    } ender{stream};

    // zlib counts in 32 bits, so large members are fed in chunks.
    constexpr uint64_t kChunk = uint64_t{1} << 30;
    std::string out(entry.uncompressedSize, '\0');
    uint64_t inPos = 0, outPos = 0;
    while (true) {
      const uInt inChunk = static_cast<uInt>(std::min<uint64_t>(compressed.size() - inPos, kChunk));
      const uInt outChunk = static_cast<uInt>(std::min<uint64_t>(out.size() - outPos, kChunk));
      stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data() + inPos));
      stream.avail_in = inChunk;
      stream.next_out = reinterpret_cast<Bytef*>(out.data() + outPos);
      stream.avail_out = outChunk;
      const int result = inflate(&stream, Z_NO_FLUSH);
      inPos += inChunk - stream.avail_in;
      outPos += outChunk - stream.avail_out;
      if (result == Z_STREAM_END) break;
      if (result == Z_BUF_ERROR) {
        if (inPos == compressed.size()) failDamaged("the compressed data of " + member + " is cut off");
        failDamaged(member + " decompresses to more than the recorded " + std::to_string(out.size()) + " bytes");
      }
      if (result != Z_OK)
        failDamaged("the compressed data of " + member + " is corrupt (" + (stream.msg ? stream.msg : "zlib error") +
                    ")");
    }
    if (outPos != out.size())
      failDamaged(member + " decompresses to " + std::to_string(outPos) + " bytes, the archive records " +
                  std::to_string(out.size()));
    return out;
  }

  static std::string hex(uint32_t value) {
    static const char* const kDigits = "0123456789abcdef";
    std::string out = "0x";
    for (int shift = 28; shift >= 0; shift -= 4) out += kDigits[(value >> shift) & 15];
    return out;
  }

  const std::string& bytes_;
  const std::string& what_;
};

void appendLittleEndian(std::string& out, uint64_t value, std::size_t width) {
  for (std::size_t i = 0; i < width; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}

bool isAscii(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

}  // namespace

std::map<std::string, Tensor> parseNpz(const std::string& bytes, const std::string& what) {
  return ZipReader(bytes, what).readAll();
}

std::string serializeNpz(const std::map<std::string, Tensor>& arrays) {
  constexpr uint64_t kZip32Limit = 0xffffffff;  // sizes and offsets at or above need zip64
  constexpr uint16_t kVersionNeeded = 20;
  constexpr uint16_t kVersionMadeBy = (3 << 8) | 20;    // Unix, zip 2.0
  constexpr uint32_t kUnixRegularFile = 0100644u << 16;  // external attributes: -rw-r--r--
  constexpr uint16_t kDosDate1980 = (0 << 9) | (1 << 5) | 1;  // fixed timestamp: reproducible output

  if (arrays.size() >= 0xffff)
    throw UserError("cannot write an .npz with " + std::to_string(arrays.size()) + " arrays (the limit is 65534)");
  std::string archive, centralDirectory;
  for (const auto& [name, tensor] : arrays) {
    const std::string memberName = name + ".npy";
    if (memberName.size() > 0xffff) throw UserError("cannot write an .npz member with a name this long");
    const std::string data = serializeNpy(tensor);
    if (data.size() >= kZip32Limit)
      throw UserError("cannot write the array '" + name + "' to .npz: members of 4 GiB or more need zip64, "
                      "which einjit does not write");
    const uint64_t offset = archive.size();
    if (offset >= kZip32Limit)
      throw UserError("cannot write .npz archives of 4 GiB or more (zip64 is not supported for writing)");
    const uint32_t crc = static_cast<uint32_t>(
        crc32_z(crc32_z(0, nullptr, 0), reinterpret_cast<const Bytef*>(data.data()), data.size()));
    const uint16_t flags = isAscii(memberName) ? 0 : kFlagUtf8Name;

    // Fields shared by the local header and the central directory entry, from "version needed" on.
    std::string common;
    appendLittleEndian(common, kVersionNeeded, 2);
    appendLittleEndian(common, flags, 2);
    appendLittleEndian(common, kMethodStored, 2);
    appendLittleEndian(common, 0, 2);  // DOS time 00:00:00
    appendLittleEndian(common, kDosDate1980, 2);
    appendLittleEndian(common, crc, 4);
    appendLittleEndian(common, data.size(), 4);  // compressed size
    appendLittleEndian(common, data.size(), 4);  // uncompressed size
    appendLittleEndian(common, memberName.size(), 2);
    appendLittleEndian(common, 0, 2);  // extra field length

    appendLittleEndian(archive, kLocalHeaderSignature, 4);
    archive += common;
    archive += memberName;
    archive += data;

    appendLittleEndian(centralDirectory, kCentralHeaderSignature, 4);
    appendLittleEndian(centralDirectory, kVersionMadeBy, 2);
    centralDirectory += common;
    appendLittleEndian(centralDirectory, 0, 2);  // comment length
    appendLittleEndian(centralDirectory, 0, 2);  // disk number start
    appendLittleEndian(centralDirectory, 0, 2);  // internal attributes
    appendLittleEndian(centralDirectory, kUnixRegularFile, 4);
    appendLittleEndian(centralDirectory, offset, 4);
    centralDirectory += memberName;
  }
  const uint64_t centralDirOffset = archive.size();
  if (centralDirOffset >= kZip32Limit || centralDirectory.size() >= kZip32Limit)
    throw UserError("cannot write .npz archives of 4 GiB or more (zip64 is not supported for writing)");
  archive += centralDirectory;

  appendLittleEndian(archive, kEndOfCentralDirSignature, 4);
  appendLittleEndian(archive, 0, 2);  // this disk
  appendLittleEndian(archive, 0, 2);  // disk with the central directory
  appendLittleEndian(archive, arrays.size(), 2);
  appendLittleEndian(archive, arrays.size(), 2);
  appendLittleEndian(archive, centralDirectory.size(), 4);
  appendLittleEndian(archive, centralDirOffset, 4);
  appendLittleEndian(archive, 0, 2);  // comment length
  return archive;
}

std::map<std::string, Tensor> readNpz(const std::string& path) { return parseNpz(readFileBytes(path), path); }

void writeNpz(const std::string& path, const std::map<std::string, Tensor>& arrays) {
  writeFileAtomically(path, serializeNpz(arrays));
}

}  // namespace einjit
