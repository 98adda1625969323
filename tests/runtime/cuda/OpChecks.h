// Checks of the GPU ops (runtime/cuda/CudaOps.h) on any OpDevice against the CPU ops of
// runtime/ops (themselves checked against finite differences) and the CPU AdamW, run in
// float64 on the same inputs (rounded to the storage precision first, so both sides see the
// same numbers). Each check reports its mismatches with EXPECT_*; the host simulation tests and
// the GPU tests share them.
//
// Tolerances (max |device - cpu| over max |cpu|): f32 1e-5 (fp32 math over at most a few
// hundred terms, ~1e-6). bf16 1e-2: inputs are the same bf16 values on both sides and the math
// is fp32, so a single-kernel result differs by its final bf16 rounding (2^-9 relative, 2e-3
// of the scale at most); chained kernels (attention backward reads the bf16 output for its row
// dots; LayerNorm parameter gradients add bf16-rounded partials' inputs) compound a few such
// roundings, hence ~5 bf16 ulps of the scale.
#pragma once

#include <cstdint>
#include <string>

#include "compiler/cuda/CudaEmitter.h"
#include "runtime/cuda/OpDevice.h"

namespace einjit::cuda::testing {

double toleranceFor(Precision precision);

struct AttentionCase {
  int64_t batch, seq, heads, headDim;
  double logitScale;
  std::string name() const;
};

void checkEmbedding(OpDevice& device, Precision precision, int64_t vocab, int64_t width, int64_t count);
void checkResidualOps(OpDevice& device, Precision precision, int64_t rows, int64_t width);
void checkLayerNorm(OpDevice& device, Precision precision, int64_t rows, int64_t width, bool affine);
void checkActivations(OpDevice& device, Precision precision, int64_t rows, int64_t width);
void checkCrossEntropy(OpDevice& device, Precision precision, int64_t rows, int64_t vocab, double lossGradient);
void checkMeanSquaredError(OpDevice& device, Precision precision, int64_t rows, int64_t width, double lossGradient);
void checkAttention(OpDevice& device, Precision precision, const AttentionCase& c);
void checkConversion(OpDevice& device, int64_t count);
// The structured layer `spec` (built for dIn -> dOut) through DeviceLinear on `rows` rows,
// forward and backward, against the same kernel programs run by the reference executor
// (runtime/reference, float64) on the same weights: kernelParameterTensors' (normalised, with
// `norm`).
void checkDeviceLinear(OpDevice& device, Precision precision, const std::string& spec, int64_t dIn, int64_t dOut,
                       int64_t rows);
// weightNorm / weightNormBackward of an f32 master tensor of n elements (gamma given or not;
// scaled so that the clamp is active or not) against the reference WeightNorm op; the results
// in `precision`.
void checkWeightNorm(OpDevice& device, Precision precision, int64_t n, bool withGamma, bool clamped);
// `steps` AdamW steps on three parameters (one spans several chunks), gradients in
// `gradPrecision`, against rt::AdamW: parameters, moments and the norm after every step.
void checkAdamW(OpDevice& device, Precision gradPrecision, double clipNorm, int steps);

}  // namespace einjit::cuda::testing
