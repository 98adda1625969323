// libFuzzer target for the .npy and .npz readers. Every input is parsed both as a .npy file
// and as an .npz archive; malformed input must end in einjit::UserError, anything else (a
// crash, a sanitizer report, another exception) is a bug. What parses must survive a
// write-and-read round trip unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "einjit/error.h"
#include "einjit/tensor.h"
#include "runtime/io/IoDetail.h"
#include "runtime/io/Npy.h"

namespace {

bool sameTensor(const einjit::Tensor& a, const einjit::Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

void checkNpy(const std::string& bytes) {
  einjit::Tensor tensor;
  try {
    tensor = einjit::parseNpy(bytes, "fuzz input");
  } catch (const einjit::UserError&) {
    return;
  }
  if (!sameTensor(tensor, einjit::parseNpy(einjit::serializeNpy(tensor), "round trip"))) std::abort();
}

void checkNpz(const std::string& bytes) {
  std::map<std::string, einjit::Tensor> arrays;
  try {
    arrays = einjit::parseNpz(bytes, "fuzz input");
  } catch (const einjit::UserError&) {
    return;
  }
  const std::map<std::string, einjit::Tensor> again = einjit::parseNpz(einjit::serializeNpz(arrays), "round trip");
  if (again.size() != arrays.size()) std::abort();
  for (const auto& [name, tensor] : arrays) {
    const auto found = again.find(name);
    if (found == again.end() || !sameTensor(tensor, found->second)) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  checkNpy(bytes);
  checkNpz(bytes);
  return 0;
}
