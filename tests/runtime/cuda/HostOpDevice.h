// An OpDevice on the host: the host flavour of the op kernels (runtime/cuda/OpKernels.h),
// compiled once per process with the system C++ compiler, launched block by block with every
// thread a fiber. Device memory is host memory; new buffers and dynamic shared memory start
// filled with 0xff bytes (NaN as floats), so an element a kernel forgets to write, or reads
// before it is loaded, shows in the results.
#pragma once

#include "runtime/cuda/OpDevice.h"

namespace einjit::cuda::testing {

// Throws std::runtime_error when the host flavour does not compile or a launch goes wrong
// (a missing kernel, threads that disagree about a barrier or a shuffle).
OpDevice& hostOpDevice();

}  // namespace einjit::cuda::testing
