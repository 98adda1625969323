// Resolving the functions of a library loaded with dlopen (the CUDA driver, NVRTC), so that one
// binary runs with or without them. Internal to compiler/cuda.
#pragma once

#include <dlfcn.h>

#include <string>

namespace einjit::cuda::detail {

// Resolves `symbol` into `slot`; false, with `problem` set to "<library> lacks <symbol><hint>",
// when `library` does not export it.
template <class Function>
bool resolveSymbol(void* library, const char* symbol, Function& slot, std::string& problem,
                   const char* libraryName, const char* hint = "") {
  slot = reinterpret_cast<Function>(dlsym(library, symbol));
  if (slot == nullptr) problem = std::string(libraryName) + " lacks " + symbol + hint;
  return slot != nullptr;
}

}  // namespace einjit::cuda::detail
