// Reading and writing numpy .npy and .npz files (float32 / float64, little-endian).
//
// Reading accepts format versions 1.0, 2.0 and 3.0, C and Fortran order (converted to C
// order), stored and deflated .npz members, and zip64 records (numpy writes them).
// Every defect throws UserError naming the file and the problem: wrong magic, truncated data,
// an unsupported or big-endian dtype, a header that lies about the data size, a malformed header.
// Writing is atomic: data goes to a temporary file in the same directory, is flushed and
// renamed over the target, so a failure never leaves a partial output.
#pragma once

#include <map>
#include <string>

#include "einjit/tensor.h"

namespace einjit {

Tensor readNpy(const std::string& path);
Tensor parseNpy(const std::string& bytes, const std::string& what);  // what: name for errors
void writeNpy(const std::string& path, const Tensor& tensor);
std::string serializeNpy(const Tensor& tensor);

// Member names without the ".npy" suffix, as numpy.load(...)[name] sees them.
std::map<std::string, Tensor> readNpz(const std::string& path);
void writeNpz(const std::string& path, const std::map<std::string, Tensor>& arrays);

// Writes `contents` to `path` atomically (temporary file, fsync, rename).
void writeFileAtomically(const std::string& path, const std::string& contents);

}  // namespace einjit
