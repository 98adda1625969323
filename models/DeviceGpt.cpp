#include "models/DeviceGpt.h"

#include <map>
#include <string>

#include "einjit/error.h"

namespace einjit::models {

using cuda::DeviceTensor;

struct DeviceGpt::Block {
  int ln1Gamma = -1, ln1Beta = -1, ln2Gamma = -1, ln2Beta = -1;
  int qLnGamma = -1, qLnBeta = -1, kLnGamma = -1, kLnBeta = -1;
  std::unique_ptr<DeviceStructuredLinear> q, k, v, proj, fc, fcProj;
};

// What the backward pass reads, per block and at the top.
struct DeviceGpt::Activations {
  struct Block {
    DeviceTensor xIn;             // the block's input
    cuda::LayerNormForward ln1;   // ln1.y: the q, k, v layers' input
    DeviceTensor qRaw, kRaw;      // before QK-LayerNorm
    cuda::LayerNormForward qLn, kLn;
    DeviceTensor q, k, v;         // attention's inputs
    cuda::AttentionForward attention;
    DeviceTensor xMid;            // after the attention residual
    cuda::LayerNormForward ln2;
    DeviceTensor fcOut, geluOut;
  };
  int64_t batch = 0, seq = 0;
  cuda::AttentionShape attentionShape;
  std::map<const DeviceStructuredLinear*, std::vector<DeviceTensor>> kernelWeights;  // what each layer's kernels took
  std::unique_ptr<cuda::DeviceIds> tokens, positions, targets;
  std::vector<Block> blocks;
  DeviceTensor xFinal;
  cuda::LayerNormForward lnF;
  DeviceTensor logits;
  cuda::CrossEntropyForward crossEntropy;
};

DeviceGpt::DeviceGpt(const Gpt& model, cuda::OpDevice& device, cuda::Precision compute)
    : config_(model.config()), params_(model.parameters(), device, compute, "device GPT") {
  auto index = [&](const std::string& name) { return params_.index(name); };
  auto linear = [&](const std::string& name) {
    return std::make_unique<DeviceStructuredLinear>(model.linear(name), params_);
  };
  wte_ = index("wte");
  wpe_ = index("wpe");
  for (int64_t i = 0; i < config_.nLayer; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    Block b;
    b.ln1Gamma = index(p + "ln1.gamma");
    b.ln1Beta = index(p + "ln1.beta");
    b.ln2Gamma = index(p + "ln2.gamma");
    b.ln2Beta = index(p + "ln2.beta");
    if (config_.qkLayerNorm) {
      b.qLnGamma = index(p + "attn.q_ln.gamma");
      b.qLnBeta = index(p + "attn.q_ln.beta");
      b.kLnGamma = index(p + "attn.k_ln.gamma");
      b.kLnBeta = index(p + "attn.k_ln.beta");
    }
    b.q = linear(p + "attn.q");
    b.k = linear(p + "attn.k");
    b.v = linear(p + "attn.v");
    b.proj = linear(p + "attn.proj");
    b.fc = linear(p + "mlp.fc");
    b.fcProj = linear(p + "mlp.proj");
    blocks_.push_back(std::move(b));
  }
  lnFGamma_ = index("ln_f.gamma");
  lnFBeta_ = index("ln_f.beta");
  head_ = linear("head");
}

DeviceGpt::~DeviceGpt() = default;

double DeviceGpt::loss(const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets, int64_t batch,
                       int64_t seq, bool withBackward) {
  const GptConfig& c = config_;
  const std::vector<int32_t> positions = gptPositions(c, tokens.size(), batch, seq);
  if (targets.size() != tokens.size())
    throw UserError("GPT loss: " + std::to_string(targets.size()) + " targets for " + std::to_string(tokens.size()) +
                    " tokens");
  const int64_t rows = batch * seq, headDim = c.dModel / c.nHead;

  Activations a;
  a.batch = batch;
  a.seq = seq;
  cuda::OpDevice& device = params_.device();
  a.tokens = std::make_unique<cuda::DeviceIds>(device, tokens, c.vocab, "embedding");
  a.positions = std::make_unique<cuda::DeviceIds>(device, positions, c.context, "position embedding");
  a.targets = std::make_unique<cuda::DeviceIds>(device, targets, c.vocab, "crossEntropy");
  params_.beginStep();
  auto P = [&](int i) -> const DeviceTensor& { return params_.value(i); };
  a.attentionShape = cuda::AttentionShape{batch, seq, c.nHead, attentionLogitScale(c)};
  auto run = [&](const DeviceStructuredLinear& layer, const DeviceTensor& input) {
    return layer.forward(params_, input, a.kernelWeights[&layer]);
  };
  auto perHead = [&](const DeviceTensor& t, int gamma, int beta) {
    return cuda::layerNorm(t.reshaped({rows * c.nHead, headDim}), &P(gamma), &P(beta));
  };

  DeviceTensor x = cuda::add(cuda::embedding(*a.tokens, P(wte_)), cuda::embedding(*a.positions, P(wpe_)));
  for (const Block& b : blocks_) {
    Activations::Block s;
    s.xIn = x;
    s.ln1 = cuda::layerNorm(x, &P(b.ln1Gamma), &P(b.ln1Beta));
    s.q = s.qRaw = run(*b.q, s.ln1.y);
    s.k = s.kRaw = run(*b.k, s.ln1.y);
    s.v = run(*b.v, s.ln1.y);
    if (c.qkLayerNorm) {
      s.qLn = perHead(s.qRaw, b.qLnGamma, b.qLnBeta);
      s.kLn = perHead(s.kRaw, b.kLnGamma, b.kLnBeta);
      s.q = s.qLn.y.reshaped({rows, c.dModel});
      s.k = s.kLn.y.reshaped({rows, c.dModel});
    }
    s.attention = cuda::causalSelfAttention(s.q, s.k, s.v, a.attentionShape);
    DeviceTensor attnOut = run(*b.proj, s.attention.out);
    if (c.residualScale != 1.0) attnOut = cuda::scale(attnOut, c.residualScale);
    x = cuda::add(x, attnOut);
    s.xMid = x;
    s.ln2 = cuda::layerNorm(x, &P(b.ln2Gamma), &P(b.ln2Beta));
    s.fcOut = run(*b.fc, s.ln2.y);
    s.geluOut = cuda::gelu(s.fcOut);
    DeviceTensor mlpOut = run(*b.fcProj, s.geluOut);
    if (c.residualScale != 1.0) mlpOut = cuda::scale(mlpOut, c.residualScale);
    x = cuda::add(x, mlpOut);
    a.blocks.push_back(std::move(s));
  }
  a.xFinal = x;
  a.lnF = cuda::layerNorm(x, &P(lnFGamma_), &P(lnFBeta_));
  a.logits = run(*head_, a.lnF.y);
  a.crossEntropy = cuda::crossEntropy(a.logits, *a.targets);
  const double value = a.crossEntropy.loss.download(DType::F64).get(0);
  if (withBackward) backward(a);
  return value;
}

void DeviceGpt::backward(const Activations& a) {
  const GptConfig& c = config_;
  const int64_t rows = a.batch * a.seq, headDim = c.dModel / c.nHead;
  // A linear layer's backward: its parameters' gradients stored, d(input) returned.
  auto linearBackward = [&](const DeviceStructuredLinear& layer, const DeviceTensor& input, const DeviceTensor& dy) {
    return layer.backward(params_, input, a.kernelWeights.at(&layer), dy);
  };
  auto layerNormBackward = [&](const DeviceTensor& x, int gamma, int beta, const cuda::LayerNormForward& saved,
                               const DeviceTensor& dy) {
    cuda::LayerNormGradients g = cuda::layerNormBackward(x, &params_.value(gamma), saved, dy, true);
    params_.grad(gamma) = std::move(g.dgamma);
    params_.grad(beta) = std::move(g.dbeta);
    return std::move(g.dx);
  };

  const DeviceTensor dlogits = cuda::crossEntropyBackward(a.logits, *a.targets, a.crossEntropy, 1.0);
  DeviceTensor dx = layerNormBackward(a.xFinal, lnFGamma_, lnFBeta_, a.lnF, linearBackward(*head_, a.lnF.y, dlogits));
  for (std::size_t i = blocks_.size(); i-- > 0;) {
    const Block& b = blocks_[i];
    const Activations::Block& s = a.blocks[i];
    // x = xMid + residualScale * fcProj(gelu(fc(ln2(xMid))))
    const DeviceTensor dmlp = c.residualScale != 1.0 ? cuda::scale(dx, c.residualScale) : dx;
    const DeviceTensor dgelu = linearBackward(*b.fcProj, s.geluOut, dmlp);
    const DeviceTensor dfc = cuda::geluBackward(s.fcOut, dgelu);
    const DeviceTensor dln2 = linearBackward(*b.fc, s.ln2.y, dfc);
    dx = cuda::add(dx, layerNormBackward(s.xMid, b.ln2Gamma, b.ln2Beta, s.ln2, dln2));
    // xMid = xIn + residualScale * proj(attention(q, k, v))
    const DeviceTensor dattn = c.residualScale != 1.0 ? cuda::scale(dx, c.residualScale) : dx;
    const DeviceTensor dout = linearBackward(*b.proj, s.attention.out, dattn);
    cuda::AttentionGradients g = cuda::causalSelfAttentionBackward(s.q, s.k, s.v, s.attention, dout, a.attentionShape);
    DeviceTensor dq = std::move(g.dq), dk = std::move(g.dk);
    if (c.qkLayerNorm) {
      const Shape heads = {rows * c.nHead, headDim};
      dq = layerNormBackward(s.qRaw.reshaped(heads), b.qLnGamma, b.qLnBeta, s.qLn, dq.reshaped(heads))
               .reshaped({rows, c.dModel});
      dk = layerNormBackward(s.kRaw.reshaped(heads), b.kLnGamma, b.kLnBeta, s.kLn, dk.reshaped(heads))
               .reshaped({rows, c.dModel});
    }
    DeviceTensor dh = cuda::add(linearBackward(*b.q, s.ln1.y, dq), linearBackward(*b.k, s.ln1.y, dk));
    dh = cuda::add(dh, linearBackward(*b.v, s.ln1.y, g.dv));
    dx = cuda::add(dx, layerNormBackward(s.xIn, b.ln1Gamma, b.ln1Beta, s.ln1, dh));
  }
  params_.grad(wte_) = cuda::embeddingBackward(*a.tokens, dx);
  params_.grad(wpe_) = cuda::embeddingBackward(*a.positions, dx);
}

}  // namespace einjit::models
