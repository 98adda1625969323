// GPT-2 with every linear layer chosen by a structure template (the contract both this model and
// the PyTorch fixture tests/models/torch_models.py follow is written out in models/README.md).
//
// Tokens (batch, seq) are int32, rows ordered batch-major (row = b*seq + t), seq <= context:
//   x = wte[tok] + wpe[t]
//   per block: h = ln1(x); q, k, v = Q(h), K(h), V(h)
//              (qkLayerNorm: q, k LayerNormed per head, k *= 8/sqrt(headDim))
//              a = causal softmax attention with logits q.k / sqrt(headDim)
//              x += residualScale * Proj(a); x += residualScale * FCproj(gelu(FC(ln2(x))))
//   logits = head(ln_f(x)); loss = mean cross-entropy of next-token targets.
// No biases in linear layers; LayerNorms have gamma and beta (eps 1e-5).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/ModelParts.h"
#include "runtime/ops/StructuredLinear.h"

namespace einjit::models {

// Which linear layers take the structure (the others are dense).
enum class LayerSelection {
  All,         // q, k, v, attention proj, fc, fc proj, head
  AllButLast,  // all but the head
  Ffn,         // fc and fc proj only
};
// "all", "all_but_last", "ffn" (UserError naming the choices otherwise).
LayerSelection parseLayerSelection(const std::string& text);
const char* layerSelectionName(LayerSelection selection);

struct GptConfig {
  int64_t vocab = 96;
  int64_t context = 128;
  int64_t nLayer = 4;
  int64_t nHead = 4;
  int64_t dModel = 256;
  std::string structure = "dense";  // a template: "btt(rank=4)", "monarch(blocks=4)", ...
  LayerSelection layers = LayerSelection::All;
  bool qkLayerNorm = false;
  double residualScale = 1.0;  // paper 2: sqrt(3 / nLayer)
  int64_t muPBaseWidth = 0;    // 0: each layer's own input width (dense multiplier 1)
  uint64_t seed = 0;
  DType dtype = DType::F32;
};

// The positions (row % seq) of a batch of `tokens` ids, batch-major (batch, seq), after checking
// the sizes against the config (UserError otherwise).
std::vector<int32_t> gptPositions(const GptConfig& config, std::size_t tokens, int64_t batch, int64_t seq);
// The attention's logit scale: 1/sqrt(headDim), or 8/headDim with QK-LayerNorm.
double attentionLogitScale(const GptConfig& config);

class Gpt {
 public:
  // Checks the configuration (UserError naming the bad field) and initialises every parameter:
  // wte, wpe ~ N(0, 0.02^2); structured layers by the IR's muP rule, the last core of the
  // attention proj, the FFN proj and the head zeroed.
  explicit Gpt(GptConfig config);

  const GptConfig& config() const { return config_; }

  // Logits (batch*seq, vocab) for tokens (batch*seq values, batch-major).
  rt::Var logits(rt::Tape& tape, const std::vector<int32_t>& tokens, int64_t batch,
                 int64_t seq) const;
  // Mean next-token cross-entropy: targets[row] is the token that follows tokens[row].
  rt::Var loss(rt::Tape& tape, const std::vector<int32_t>& tokens,
               const std::vector<int32_t>& targets, int64_t batch, int64_t seq) const;

  // Every parameter, named as in the contract, with its muP LR multiplier and decay flag.
  const std::vector<rt::ParameterInfo>& parameters() const { return params_; }
  int64_t parameterCount() const;
  // The linear layer named "blocks.<i>.attn.q" (k, v, proj), "blocks.<i>.mlp.fc" (proj) or
  // "head"; UserError for other names.
  const rt::StructuredLinear& linear(const std::string& name) const;

  // Forward MACs of one example, a sequence of `context` tokens: every linear layer (head
  // included) per token, plus attention's q.k and p.v products over the causal triangle
  // (dModel * T * (T+1) per layer).
  int64_t macsPerExample() const;

 private:
  struct Block {
    LayerNormParams ln1, ln2, qLn, kLn;  // qLn, kLn: only with qkLayerNorm
    rt::StructuredLinear q, k, v, proj, fc, fcProj;
  };

  GptConfig config_;
  rt::Var wte_, wpe_;
  std::vector<Block> blocks_;
  LayerNormParams lnF_;
  rt::StructuredLinear head_;
  std::vector<rt::ParameterInfo> params_;  // in the order above
};

}  // namespace einjit::models
