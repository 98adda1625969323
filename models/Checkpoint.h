// Training checkpoints: one .npz holding everything a run needs to continue bit-identically.
//
// Members: "param.<name>" (parameter values), "adam_m.<name>" and "adam_v.<name>" (AdamW
// moments), "meta.format" (format version), "meta.step" (optimiser steps done), "meta.seconds"
// (training time so far), "meta.config" (the TrainConfig as JSON, stored as one byte per float32
// element since .npz here carries float arrays only). The data sampler needs no state of its own:
// every batch is drawn from a seed derived from (config seed, step), so the step is its state.
// Files are written atomically (temporary file, fsync, rename): a crash never leaves a torn file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "einjit/tensor.h"
#include "runtime/ops/StructuredLinear.h"

namespace einjit::models {

struct Checkpoint {
  std::string configJson;
  int64_t step = 0;
  double seconds = 0;
  std::map<std::string, Tensor> params, firstMoments, secondMoments;
};

void writeCheckpoint(const std::string& path, const Checkpoint& checkpoint);

// UserError naming the file for a missing, truncated or corrupted file, or one that is not an
// einjit checkpoint (missing members, bad meta values).
Checkpoint readCheckpoint(const std::string& path);

// Copies `tensors` into the parameters by name. Every parameter must be present with its shape,
// and no tensor may be left over (UserError naming `what` and the tensor otherwise). Values are
// converted to each parameter's dtype.
void loadTensorsInto(const std::map<std::string, Tensor>& tensors,
                     const std::vector<rt::ParameterInfo>& params, const std::string& what);

}  // namespace einjit::models
