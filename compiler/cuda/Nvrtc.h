// NVRTC, loaded at run time with dlopen (libnvrtc.so.13, libnvrtc.so, or the same names under
// /usr/local/cuda/lib64), so einjit runs where the CUDA toolkit is absent: only compiling CUDA
// code then fails, with a message that says why.
#pragma once

#include <string>
#include <vector>

namespace einjit::cuda {

struct NvrtcOutput {
  std::string ptx;
  std::string cubin;  // empty for virtual architectures (compute_XY)
  std::string log;    // NVRTC's log (warnings), possibly empty
};

// Why NVRTC cannot be loaded, or "" when it can.
std::string nvrtcUnavailableReason();

// "13.0": the NVRTC version, part of every kernel cache key. Throws UserError without NVRTC.
std::string nvrtcVersion();

// Compiles CUDA C++ `source` for `arch` ("sm_90a", "sm_80", ...) with extra NVRTC `options`.
// Throws UserError carrying the NVRTC log when the source does not compile, or when NVRTC
// is unavailable. `name` names the program in messages.
NvrtcOutput nvrtcCompile(const std::string& source, const std::string& name, const std::string& arch,
                         const std::vector<std::string>& options = {});

}  // namespace einjit::cuda
