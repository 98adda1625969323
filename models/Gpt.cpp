#include "models/Gpt.h"

#include <cmath>

#include "einjit/error.h"
#include "frontend/structures/Structures.h"
#include "runtime/tensor/Random.h"
#include "runtime/ops/Ops.h"

namespace einjit::models {
namespace {

GptConfig checked(GptConfig config) {
  auto require = [](bool ok, const std::string& what) {
    if (!ok) throw UserError("GPT config: " + what);
  };
  require(config.vocab >= 1, "vocab must be at least 1, got " + std::to_string(config.vocab));
  require(config.context >= 1, "context must be at least 1, got " + std::to_string(config.context));
  require(config.nLayer >= 1, "n_layer must be at least 1, got " + std::to_string(config.nLayer));
  require(config.nHead >= 1, "n_head must be at least 1, got " + std::to_string(config.nHead));
  require(config.dModel >= 1, "d_model must be at least 1, got " + std::to_string(config.dModel));
  require(config.dModel % config.nHead == 0,
          "d_model (" + std::to_string(config.dModel) + ") must be a multiple of n_head (" +
              std::to_string(config.nHead) + ")");
  require(std::isfinite(config.residualScale),
          "residual_scale must be a finite number");
  require(config.muPBaseWidth >= 0, "mup_base_width must be >= 0 (0: each layer's own width)");
  return config;
}

Tensor normalTensor(Shape shape, double std, uint64_t seed, const std::string& name, DType dtype) {
  Tensor t(dtype, std::move(shape));
  Random random(streamSeed(seed, name));
  for (int64_t i = 0; i < t.numel(); ++i) t.set(i, std * random.normal());
  return t;
}

struct LayerSpecs {
  std::string attention, ffn, head;
};

// With QK-LayerNorm the reference gives W_Q and W_K no weight-norm gains (their LayerNorms
// would undo any gain): "btt(rank=4, norm)" becomes "btt(rank=4, norm, gain=false)". Specs that
// say `gain` themselves are kept.
std::string withoutNormGains(const std::string& spec) {
  if (spec.find('(') == std::string::npos) return spec;  // a bare name: no norm
  const StructureSpec parsed = parseStructureSpec(spec);
  bool norm = false, gain = false;
  for (const StructureArg& arg : parsed.args) {
    norm = norm || (arg.key == "norm" && arg.value == "true");
    gain = gain || arg.key == "gain";
  }
  if (!norm || gain) return spec;
  const std::size_t close = spec.rfind(')');
  return spec.substr(0, close) + ", gain=false" + spec.substr(close);
}

LayerSpecs layerSpecs(const GptConfig& config) {
  const std::string& s = config.structure;
  switch (config.layers) {
    case LayerSelection::All: return {s, s, s};
    case LayerSelection::AllButLast: return {s, s, "dense"};
    case LayerSelection::Ffn: return {"dense", s, "dense"};
  }
  return {};
}

}  // namespace

LayerSelection parseLayerSelection(const std::string& text) {
  if (text == "all") return LayerSelection::All;
  if (text == "all_but_last") return LayerSelection::AllButLast;
  if (text == "ffn") return LayerSelection::Ffn;
  throw UserError("unknown layer selection '" + text + "': expected all, all_but_last or ffn");
}

const char* layerSelectionName(LayerSelection selection) {
  switch (selection) {
    case LayerSelection::All: return "all";
    case LayerSelection::AllButLast: return "all_but_last";
    case LayerSelection::Ffn: return "ffn";
  }
  return "?";
}

Gpt::Gpt(GptConfig config)
    : config_(checked(std::move(config))),
      wte_(rt::parameter(normalTensor({config_.vocab, config_.dModel}, 0.02, config_.seed, "wte", config_.dtype), "wte")),
      wpe_(rt::parameter(normalTensor({config_.context, config_.dModel}, 0.02, config_.seed, "wpe", config_.dtype), "wpe")),
      lnF_(makeLayerNorm("ln_f", config_.dModel, config_.dtype)),
      head_(makeLinear("head", layerSpecs(config_).head, config_.dModel, config_.vocab, /*zeroLast=*/true,
                       config_.seed, config_.dtype, config_.muPBaseWidth)) {
  const GptConfig& c = config_;
  const LayerSpecs specs = layerSpecs(c);
  const int64_t d = c.dModel, headDim = c.dModel / c.nHead;
  auto linear = [&](const std::string& name, const std::string& spec, int64_t dIn, int64_t dOut, bool zeroLast) {
    return makeLinear(name, spec, dIn, dOut, zeroLast, c.seed, c.dtype, c.muPBaseWidth);
  };
  for (int64_t i = 0; i < c.nLayer; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    blocks_.push_back(Block{
        makeLayerNorm(p + "ln1", d, c.dtype),
        makeLayerNorm(p + "ln2", d, c.dtype),
        c.qkLayerNorm ? makeLayerNorm(p + "attn.q_ln", headDim, c.dtype) : LayerNormParams{},
        c.qkLayerNorm ? makeLayerNorm(p + "attn.k_ln", headDim, c.dtype) : LayerNormParams{},
        linear(p + "attn.q", c.qkLayerNorm ? withoutNormGains(specs.attention) : specs.attention, d, d, false),
        linear(p + "attn.k", c.qkLayerNorm ? withoutNormGains(specs.attention) : specs.attention, d, d, false),
        linear(p + "attn.v", specs.attention, d, d, false),
        linear(p + "attn.proj", specs.attention, d, d, true),
        linear(p + "mlp.fc", specs.ffn, d, 4 * d, false),
        linear(p + "mlp.proj", specs.ffn, 4 * d, d, true),
    });
  }

  params_.push_back({wte_, 1.0, true});
  params_.push_back({wpe_, 1.0, true});
  for (const Block& b : blocks_) {
    appendParameters(params_, b.ln1);
    appendParameters(params_, b.q);
    appendParameters(params_, b.k);
    appendParameters(params_, b.v);
    if (c.qkLayerNorm) {
      appendParameters(params_, b.qLn);
      appendParameters(params_, b.kLn);
    }
    appendParameters(params_, b.proj);
    appendParameters(params_, b.ln2);
    appendParameters(params_, b.fc);
    appendParameters(params_, b.fcProj);
  }
  appendParameters(params_, lnF_);
  appendParameters(params_, head_);
}

rt::Var Gpt::logits(rt::Tape& tape, const std::vector<int32_t>& tokens, int64_t batch,
                    int64_t seq) const {
  const GptConfig& c = config_;
  const std::vector<int32_t> positions = gptPositions(c, tokens.size(), batch, seq);
  const int64_t rows = batch * seq, headDim = c.dModel / c.nHead;
  const double logitScale = attentionLogitScale(c);
  rt::Var x = rt::add(tape, rt::embedding(tape, tokens, wte_), rt::embedding(tape, positions, wpe_));
  for (const Block& b : blocks_) {
    rt::Var h = rt::layerNorm(tape, x, b.ln1.gamma, b.ln1.beta);
    rt::Var q = b.q.forward(tape, h), k = b.k.forward(tape, h), v = b.v.forward(tape, h);
    if (c.qkLayerNorm) {
      // LayerNorm over each head's headDim slice: rows of the (rows * heads, headDim) view.
      auto perHead = [&](const rt::Var& t, const LayerNormParams& ln) {
        rt::Var heads = rt::reshape(tape, t, {rows * c.nHead, headDim});
        return rt::reshape(tape, rt::layerNorm(tape, heads, ln.gamma, ln.beta), {rows, c.dModel});
      };
      q = perHead(q, b.qLn);
      k = perHead(k, b.kLn);
    }
    rt::Var a = rt::causalSelfAttention(tape, q, k, v, batch, seq, c.nHead, logitScale);
    rt::Var attnOut = b.proj.forward(tape, a);
    if (c.residualScale != 1.0) attnOut = rt::scale(tape, attnOut, c.residualScale);
    x = rt::add(tape, x, attnOut);
    rt::Var mlpOut = b.fcProj.forward(tape, rt::gelu(tape, b.fc.forward(tape, rt::layerNorm(tape, x, b.ln2.gamma, b.ln2.beta))));
    if (c.residualScale != 1.0) mlpOut = rt::scale(tape, mlpOut, c.residualScale);
    x = rt::add(tape, x, mlpOut);
  }
  return head_.forward(tape, rt::layerNorm(tape, x, lnF_.gamma, lnF_.beta));
}

rt::Var Gpt::loss(rt::Tape& tape, const std::vector<int32_t>& tokens,
                  const std::vector<int32_t>& targets, int64_t batch, int64_t seq) const {
  if (targets.size() != tokens.size())
    throw UserError("GPT loss: " + std::to_string(targets.size()) + " targets for " +
                    std::to_string(tokens.size()) + " tokens");
  return rt::crossEntropy(tape, logits(tape, tokens, batch, seq), targets);
}

int64_t Gpt::parameterCount() const { return models::parameterCount(params_); }

std::vector<int32_t> gptPositions(const GptConfig& c, std::size_t tokens, int64_t batch, int64_t seq) {
  if (batch < 1 || seq < 1 || seq > c.context)
    throw UserError("GPT input: need batch >= 1 and 1 <= seq <= context (" + std::to_string(c.context) +
                    "), got batch " + std::to_string(batch) + ", seq " + std::to_string(seq));
  if (static_cast<int64_t>(tokens) != batch * seq)
    throw UserError("GPT input: " + std::to_string(tokens) + " tokens given for batch " + std::to_string(batch) +
                    " x seq " + std::to_string(seq));
  std::vector<int32_t> positions(tokens);
  for (std::size_t row = 0; row < positions.size(); ++row)
    positions[row] = static_cast<int32_t>(static_cast<int64_t>(row) % seq);
  return positions;
}

double attentionLogitScale(const GptConfig& c) {
  // With QK-LayerNorm the reference scales k by 8/sqrt(headDim) before the attention's own
  // 1/sqrt(headDim); both are folded into the logit scale (the same function and gradients).
  const double headDim = static_cast<double>(c.dModel / c.nHead);
  return c.qkLayerNorm ? 8.0 / headDim : 1.0 / std::sqrt(headDim);
}

const rt::StructuredLinear& Gpt::linear(const std::string& name) const {
  if (name == "head") return head_;
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    const Block& b = blocks_[i];
    for (const auto& [suffix, layer] : {std::pair{"attn.q", &b.q}, std::pair{"attn.k", &b.k}, std::pair{"attn.v", &b.v},
                                        std::pair{"attn.proj", &b.proj}, std::pair{"mlp.fc", &b.fc},
                                        std::pair{"mlp.proj", &b.fcProj}})
      if (name == p + suffix) return *layer;
  }
  throw UserError("GPT: no linear layer named '" + name + "'");
}

int64_t Gpt::macsPerExample() const {
  const GptConfig& c = config_;
  int64_t perToken = head_.macsPerRow();
  for (const Block& b : blocks_)
    perToken += b.q.macsPerRow() + b.k.macsPerRow() + b.v.macsPerRow() + b.proj.macsPerRow() +
                b.fc.macsPerRow() + b.fcProj.macsPerRow();
  const int64_t attention = c.nLayer * c.dModel * c.context * (c.context + 1);
  return c.context * perToken + attention;
}

}  // namespace einjit::models
