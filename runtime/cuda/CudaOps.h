// The GPU runtime's non-einsum ops on device tensors: launch wrappers (argument checks, grid and
// block choices) over the kernels of runtime/cuda/OpKernels.h, on any OpDevice (the GPU, or the
// host simulation in tests). Semantics are those of the CPU ops (runtime/ops/Ops.h) and of the
// CPU AdamW (runtime/optim/AdamW.h); each op is split into a forward and a backward function
// that take what the forward saved (statistics, log-sum-exps) explicitly.
//
// Storage is f32 or bf16 (every tensor argument of one call in the same precision); math is
// fp32; saved statistics are f32. Kernels run in launch order; download() waits for them.
// Everything a caller can get wrong throws UserError. On a machine without a GPU,
// gpuOpDevice() throws UserError with cudaUnavailableReason().
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "compiler/cuda/CudaEmitter.h"
#include "einjit/tensor.h"
#include "runtime/cuda/OpDevice.h"
#include "runtime/optim/AdamW.h"

namespace einjit::cuda {

// A tensor in device memory: shape, storage precision (f32 or bf16) and a buffer of the
// device's allocator (the caching allocator on the GPU), shared by copies of the handle.
class DeviceTensor {
 public:
  DeviceTensor() = default;
  // Contents unspecified.
  static DeviceTensor empty(OpDevice& device, const Shape& shape, Precision precision);
  static DeviceTensor zeros(OpDevice& device, const Shape& shape, Precision precision);
  // `tensor` (f32 or f64) converted to `precision` (bf16: round to nearest even).
  static DeviceTensor upload(OpDevice& device, const Tensor& tensor, Precision precision);
  // The values as a host tensor of `dtype`; waits for the kernels launched before.
  Tensor download(DType dtype = DType::F32) const;

  bool defined() const { return memory_ != nullptr; }
  OpDevice& device() const { return *device_; }
  const Shape& shape() const { return shape_; }
  Precision precision() const { return precision_; }
  int64_t numel() const { return shapeNumel(shape_); }
  uint64_t address() const { return memory_->address(); }
  // The same buffer viewed with another shape of as many elements.
  DeviceTensor reshaped(const Shape& shape) const;

 private:
  OpDevice* device_ = nullptr;
  Shape shape_;
  Precision precision_ = Precision::F32;
  std::shared_ptr<DeviceMemory> memory_;
};

// Token ids (or class targets) on the device, each checked to lie in [0, classes), and for the
// embedding's backward pass the rows grouped by id (ascending within an id).
class DeviceIds {
 public:
  // `what` names the op in messages ("embedding", "crossEntropy").
  DeviceIds(OpDevice& device, const std::vector<int32_t>& ids, int64_t classes, const char* what);
  int64_t count() const { return count_; }
  int64_t classes() const { return classes_; }
  uint64_t ids() const { return ids_->address(); }
  uint64_t groupStart() const { return start_->address(); }  // classes + 1 offsets into groupRows
  uint64_t groupRows() const { return order_->address(); }

 private:
  int64_t count_ = 0, classes_ = 0;
  std::shared_ptr<DeviceMemory> ids_, start_, order_;
};

// Rows of `table` (classes, d) picked by the ids: (ids.count(), d).
DeviceTensor embedding(const DeviceIds& ids, const DeviceTensor& table);
// d(table) (classes, d) from d(out) (ids.count(), d); each table row sums its rows in order.
DeviceTensor embeddingBackward(const DeviceIds& ids, const DeviceTensor& dout);

DeviceTensor add(const DeviceTensor& a, const DeviceTensor& b);
// target += x (gradient accumulation), same shape and precision.
void addInto(DeviceTensor& target, const DeviceTensor& x);
DeviceTensor scale(const DeviceTensor& x, double factor);
// x (n, d) + bias (d).
DeviceTensor addBias(const DeviceTensor& x, const DeviceTensor& bias);
// Sums over the rows of dy (n, d): the bias gradient (d), in a fixed order.
DeviceTensor columnSums(const DeviceTensor& dy);

struct LayerNormForward {
  DeviceTensor y;
  DeviceTensor mean, rstd;  // (n) f32, for the backward pass
};
// gamma and beta (d) may be null.
LayerNormForward layerNorm(const DeviceTensor& x, const DeviceTensor* gamma, const DeviceTensor* beta,
                           double eps = 1e-5);
struct LayerNormGradients {
  DeviceTensor dx;
  DeviceTensor dgamma, dbeta;  // (d); computed when `parameterGradients`
};
LayerNormGradients layerNormBackward(const DeviceTensor& x, const DeviceTensor* gamma,
                                     const LayerNormForward& saved, const DeviceTensor& dy,
                                     bool parameterGradients);

DeviceTensor gelu(const DeviceTensor& x);
DeviceTensor geluBackward(const DeviceTensor& x, const DeviceTensor& dy);
DeviceTensor relu(const DeviceTensor& x, double gain = 1.0);
DeviceTensor reluBackward(const DeviceTensor& x, const DeviceTensor& dy, double gain = 1.0);

struct CrossEntropyForward {
  DeviceTensor loss;  // () f32: mean over rows of logsumexp(row) - row[target]
  DeviceTensor lse;   // (n) f32, for the backward pass
};
CrossEntropyForward crossEntropy(const DeviceTensor& logits, const DeviceIds& targets);
// d(logits) for d(loss) = lossGradient.
DeviceTensor crossEntropyBackward(const DeviceTensor& logits, const DeviceIds& targets,
                                  const CrossEntropyForward& saved, double lossGradient = 1.0);

// Mean over every element of (pred - target)^2, as rt::meanSquaredError: () f32.
DeviceTensor meanSquaredError(const DeviceTensor& pred, const DeviceTensor& target);
// d(pred) for d(loss) = lossGradient.
DeviceTensor meanSquaredErrorBackward(const DeviceTensor& pred, const DeviceTensor& target, double lossGradient = 1.0);

struct AttentionShape {
  int64_t batch = 1, seq = 1, heads = 1;
  double logitScale = 1.0;
};
struct AttentionForward {
  DeviceTensor out;  // (batch*seq, heads*headDim)
  DeviceTensor lse;  // (batch*seq, heads) f32: log-sum-exp of each row's scaled logits
};
// Causal self-attention as rt::causalSelfAttention: q, k, v (batch*seq, heads*headDim), rows
// batch-major, headDim <= kMaxHeadDim. Flash-style: the seq x seq matrix is never stored.
AttentionForward causalSelfAttention(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                     const AttentionShape& shape);
struct AttentionGradients {
  DeviceTensor dq, dk, dv;
};
AttentionGradients causalSelfAttentionBackward(const DeviceTensor& q, const DeviceTensor& k,
                                               const DeviceTensor& v, const AttentionForward& saved,
                                               const DeviceTensor& dout, const AttentionShape& shape);

// Weight normalisation of a layer core (structures.md section 4, the WeightNorm op of the layer
// IR): w~ = gamma * w / max(1, RMS(w) / sigma), RMS(w) = sqrt(mean(w^2) + eps). w and gamma (one
// element, or null for a gain of 1) are f32 master weights; w~ is stored in `precision`.
DeviceTensor weightNorm(const DeviceTensor& w, const DeviceTensor* gamma, double sigma, double eps,
                        Precision precision);
struct WeightNormGradients {
  DeviceTensor dw;      // w's shape, in dNormalised's precision
  DeviceTensor dgamma;  // one element (shape ()), when gamma was given
};
// The gradients through the clamp, from d(w~) = dNormalised.
WeightNormGradients weightNormBackward(const DeviceTensor& w, const DeviceTensor* gamma, double sigma, double eps,
                                       const DeviceTensor& dNormalised);

// A copy in another precision (f32 <-> bf16); the same tensor when already in it.
DeviceTensor convert(const DeviceTensor& x, Precision precision);

// AdamW as rt::AdamW (one group per tensor: lr = config.lr x lrFactor x multiplier, decay where
// the parameter says, global-norm clipping, bias correction) on f32 master weights and moments
// on the device, updated by multi-tensor kernels; gradients f32 or bf16.
class DeviceAdamW {
 public:
  struct Parameter {
    DeviceTensor value;  // f32, updated in place
    double lrMultiplier = 1.0;
    bool weightDecay = false;
  };
  DeviceAdamW(std::vector<Parameter> parameters, rt::AdamWConfig config);
  // grads[i] is the gradient of parameter i (its shape; every gradient in one precision), or an
  // undefined tensor to leave parameter i as it is this step. Returns the gradient norm before
  // clipping (reading it waits for the update).
  double step(const std::vector<DeviceTensor>& grads, double lrFactor = 1.0);

  int64_t stepCount() const { return steps_; }
  const std::vector<Parameter>& parameters() const { return parameters_; }
  // Restores the state of a checkpoint: the moments (host tensors, one pair per parameter, of
  // its shape) and the steps taken.
  void restore(const std::vector<Tensor>& firstMoments, const std::vector<Tensor>& secondMoments, int64_t steps);
  const std::vector<DeviceTensor>& firstMoments() const { return m_; }
  const std::vector<DeviceTensor>& secondMoments() const { return v_; }

 private:
  std::vector<Parameter> parameters_;
  rt::AdamWConfig config_;
  std::vector<DeviceTensor> m_, v_;
  int64_t steps_ = 0;
};

}  // namespace einjit::cuda
