// How an einsum test case shows up in test names and failure messages: its spec, with
// unprintable bytes escaped (gtest would otherwise print a raw byte dump of the case struct).
#pragma once

#include <string>

namespace einjit::testing_support {

inline std::string printableSpec(const std::string& spec) {
  std::string out;
  for (unsigned char c : spec) {
    if (c >= 0x21 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static const char* hex = "0123456789abcdef";
      out += std::string("\\x") + hex[c >> 4] + hex[c & 0xf];
    }
  }
  return out.empty() ? "<empty>" : out;
}

}  // namespace einjit::testing_support
