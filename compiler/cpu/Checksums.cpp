#include "compiler/cpu/Checksums.h"

#include <cstring>

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

// ---- CRC-32C ----

constexpr uint32_t kCrc32cPolynomial = 0x82f63b78;  // 0x1edc6f41 bit-reversed

struct Crc32cTable {
  uint32_t entries[256];
  constexpr Crc32cTable() : entries() {
    for (uint32_t byte = 0; byte < 256; ++byte) {
      uint32_t crc = byte;
      for (int bit = 0; bit < 8; ++bit) crc = crc & 1 ? (crc >> 1) ^ kCrc32cPolynomial : crc >> 1;
      entries[byte] = crc;
    }
  }
};
constexpr Crc32cTable kCrc32cTable;

uint32_t crc32cTableUpdate(uint32_t crc, const uint8_t* data, std::size_t size) {
  for (std::size_t k = 0; k < size; ++k) crc = kCrc32cTable.entries[(crc ^ data[k]) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32cByInstruction(uint32_t crc, const uint8_t* data,
                                                                std::size_t size) {
  uint64_t wide = crc;
  for (; size >= 8; size -= 8, data += 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);
    wide = __builtin_ia32_crc32di(wide, word);
  }
  crc = static_cast<uint32_t>(wide);
  for (; size > 0; --size, ++data) crc = __builtin_ia32_crc32qi(crc, *data);
  return crc;
}
#endif

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

uint32_t crc32c(std::string_view bytes) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  uint32_t crc = 0xffffffff;
#if defined(__x86_64__)
  static const bool hasInstruction = __builtin_cpu_supports("sse4.2");
  crc = hasInstruction ? crc32cByInstruction(crc, data, bytes.size())
                       : crc32cTableUpdate(crc, data, bytes.size());
#else
  crc = crc32cTableUpdate(crc, data, bytes.size());
#endif
  return ~crc;
}

uint32_t crc32cByTable(std::string_view bytes) {
  return ~crc32cTableUpdate(0xffffffff, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

}  // namespace einjit::cpu
