// The non-einsum ops a transformer or an MLP needs, each with its backward, on host tensors.
// Activations are 2-D (tokens, features) unless said otherwise. Every op checks its arguments
// (shapes, dtypes, index ranges) and throws UserError with what it expected. Work is spread
// over the CPU target's thread pool; results do not depend on the number of threads.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/autograd/Tape.h"

namespace einjit::rt {

// Rows of `table` (vocab, d) picked by `ids` (each in [0, vocab)): (ids.size(), d).
Var embedding(Tape& tape, const std::vector<int32_t>& ids, const Var& table);

// Elementwise a + b (same shape).
Var add(Tape& tape, const Var& a, const Var& b);
// x (n, d) + bias (d) broadcast over rows.
Var addBias(Tape& tape, const Var& x, const Var& bias);
// x * s for a constant s.
Var scale(Tape& tape, const Var& x, double s);
// The same elements (row-major) viewed with another shape of equal element count, e.g.
// (tokens, heads*headDim) -> (tokens*heads, headDim) for a per-head LayerNorm.
Var reshape(Tape& tape, const Var& x, const Shape& shape);

// LayerNorm over the last dim of x (n, d): (x - mean) / sqrt(var + eps) * gamma + beta.
// gamma and beta (d) may be null (no affine part, or no bias).
Var layerNorm(Tape& tape, const Var& x, const Var& gamma, const Var& beta, double eps = 1e-5);

// GELU (tanh approximation, as GPT-2) and ReLU, elementwise; `gain` multiplies the result
// (the teacher MLP uses sqrt(2) * ReLU).
Var gelu(Tape& tape, const Var& x);
Var relu(Tape& tape, const Var& x, double gain = 1.0);

// Causal multi-head self-attention core: q, k, v are (batch*seq, heads*headDim) with rows
// ordered batch-major; returns softmax(q k^T * logitScale + causal mask) v per (batch, head),
// as (batch*seq, heads*headDim).
Var causalSelfAttention(Tape& tape, const Var& q, const Var& k, const Var& v, int64_t batch,
                        int64_t seq, int64_t heads, double logitScale);

// Mean over rows of -log softmax(logits)[target]; logits (n, vocab), targets n values in
// [0, vocab). Returns a one-element tensor of shape ().
Var crossEntropy(Tape& tape, const Var& logits, const std::vector<int32_t>& targets);

// Mean over all elements of (pred - target)^2; shape ().
Var meanSquaredError(Tape& tape, const Var& pred, const Tensor& target);

}  // namespace einjit::rt
