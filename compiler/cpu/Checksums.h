// Checksums of the kernel caches: SHA-256 names entries by their key text, CRC-32C checks
// that an entry's payload is intact.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace einjit::cpu {

using Sha256Digest = std::array<uint8_t, 32>;
Sha256Digest sha256(std::string_view bytes);
std::string toHex(const Sha256Digest& digest);  // 64 lowercase hex digits

// CRC-32C (Castagnoli, reflected, as in iSCSI and ext4): the SSE 4.2 crc32 instruction where
// the CPU has it, a table otherwise. It catches every burst error of up to 32 bits and any
// other corruption with probability 1 - 2^-32, at ~10 GB/s: a cache hit checks its payload in
// microseconds where SHA-256 took 0.1-0.6 ms.
uint32_t crc32c(std::string_view bytes);
// The table version alone, whatever the CPU (for tests: both must agree).
uint32_t crc32cByTable(std::string_view bytes);

}  // namespace einjit::cpu
