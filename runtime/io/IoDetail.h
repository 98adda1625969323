// Internals of the .npy/.npz readers and writers, shared between Npy.cpp and Npz.cpp and
// exposed so that tests and the fuzzers can work on bytes in memory, without files.
#pragma once

#include <map>
#include <string>

#include "einjit/tensor.h"

namespace einjit {

// The whole contents of a regular file; UserError naming the file when it cannot be read.
std::string readFileBytes(const std::string& path);

// An .npz archive held in memory. `what` names it in errors (usually the file path).
std::map<std::string, Tensor> parseNpz(const std::string& bytes, const std::string& what);
std::string serializeNpz(const std::map<std::string, Tensor>& arrays);

}  // namespace einjit
