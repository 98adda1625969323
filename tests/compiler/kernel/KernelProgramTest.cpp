// Kernel programs: forward and derived backward kernels of every structure against the layer
// interpreter (run by the kernel interpreter, weights normalised by the host helpers), einsum
// kernels against referenceEinsum, fingerprints, and the programs that must be rejected.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "compiler/kernel/KernelProgram.h"
#include "compiler/planner/ContractionPlan.h"
#include "einjit/error.h"
#include "frontend/einsum/EinsumAST.h"
#include "frontend/structures/Structures.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "runtime/reference/ReferenceKernelProgram.h"
#include "runtime/reference/WeightNorm.h"

namespace einjit {
namespace {

using ir::kRows;
using ir::OpKind;

Tensor randomTensor(const Shape& shape, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  Tensor tensor(DType::F64, shape);
  for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, normal(rng));
  return tensor;
}

// ||actual - expected|| / ||expected|| (2-norms); shapes must agree.
double relativeError(const Tensor& actual, const Tensor& expected) {
  EXPECT_EQ(actual.shape(), expected.shape());
  if (actual.shape() != expected.shape()) return INFINITY;
  double difference = 0, norm = 0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    difference += (actual.get(i) - expected.get(i)) * (actual.get(i) - expected.get(i));
    norm += expected.get(i) * expected.get(i);
  }
  return std::sqrt(difference) / std::max(std::sqrt(norm), 1e-300);
}

std::vector<const Tensor*> pointers(const std::vector<Tensor>& tensors) {
  std::vector<const Tensor*> result;
  for (const Tensor& tensor : tensors) result.push_back(&tensor);
  return result;
}

// ---- every structure: forward and backward kernels against the layer interpreter ----

enum class Norm { None, Clamped, Unclamped };

struct StructureCase {
  std::string spec;
  Norm norm;
};

const char* const kSpecs[] = {
    "dense(in=6, out=5)",
    "lowrank(in=8, out=6, rank=2)",
    "kron(in=12, out=6)",
    "kron(in=12, out=8, factors=3)",
    "tt(in=12, out=8, rank=2)",
    "tt(in=8, out=12, rank=2, cores=3)",
    "monarch(in=16, out=12, blocks=4)",
    "monarch(in=10, out=14, blocks=4)",  // x padded
    "monarch(in=14, out=10, blocks=4)",  // y truncated
    "btt(in=16, out=12, rank=2)",
    "btt(in=8, out=12, rank=2, cores=3)",
    // x padded 11 -> 12, y truncated 16 -> 14
    "theta(in=11, out=14, alpha=0.5, beta=0.25, gamma=0.25, delta=0.25, epsilon=0.5, phi=0.25, "
    "rho=0.25)",
    // the BTT route (b = d = 1)
    "theta(in=16, out=9, alpha=0.5, beta=0, gamma=0.5, delta=0, epsilon=0.5, phi=0.5, rho=0)",
};

std::vector<StructureCase> structureCases() {
  std::vector<StructureCase> cases;
  for (const char* spec : kSpecs)
    for (Norm norm : {Norm::None, Norm::Clamped, Norm::Unclamped}) {
      std::string text = spec;
      if (norm != Norm::None) text = text.substr(0, text.size() - 1) + ", norm)";
      cases.push_back({text, norm});
    }
  return cases;
}

std::string caseName(const ::testing::TestParamInfo<StructureCase>& info) {
  std::string name;
  for (char c : info.param.spec.substr(0, info.param.spec.find('(')))
    if (std::isalnum(static_cast<unsigned char>(c))) name += c;
  name += "_" + std::to_string(info.index);
  if (info.param.norm == Norm::Clamped) name += "_normClamped";
  if (info.param.norm == Norm::Unclamped) name += "_normUnclamped";
  return name;
}

class StructureKernels : public ::testing::TestWithParam<StructureCase> {
 protected:
  void SetUp() override {
    layer_ = buildLayer(GetParam().spec);
    params_ = initLayerParams(layer_, 7, DType::F64);
    // Weights scaled so that RMS / sigma is above 1 (clamped) or below 1 (unclamped); gains off 1.
    const double scale = GetParam().norm == Norm::Clamped     ? 5.0
                         : GetParam().norm == Norm::Unclamped ? 0.2
                                                              : 1.0;
    for (const ir::Parameter& param : layer_.params) {
      Tensor& tensor = params_.at(param.name);
      for (int64_t i = 0; i < tensor.numel(); ++i)
        tensor.set(i, param.isScalarGain ? 1.3 : tensor.get(i) * scale);
    }
    std::mt19937_64 rng(11);
    x_ = randomTensor({kRowCount, layer_.dIn}, rng);
    dy_ = randomTensor({kRowCount, layer_.dOut}, rng);
  }

  static constexpr int64_t kRowCount = 3;
  ir::LayerProgram layer_;
  TensorMap params_;
  Tensor x_, dy_;
};

int countNonGainParams(const ir::LayerProgram& layer) {
  return static_cast<int>(std::count_if(layer.params.begin(), layer.params.end(),
                                        [](const ir::Parameter& p) { return !p.isScalarGain; }));
}

TEST_P(StructureKernels, ForwardKernelMatchesTheLayer) {
  const KernelProgram kernel = forwardKernel(layer_, DType::F64);
  ASSERT_EQ(static_cast<int>(kernel.inputs.size()), 1 + countNonGainParams(layer_));
  ASSERT_EQ(kernel.outputs.size(), 1u);
  for (const ir::Op& op : kernel.ops) EXPECT_NE(op.kind, OpKind::WeightNorm);
  EXPECT_TRUE(kernel.isRowValue(kernel.inputs[0]));
  EXPECT_TRUE(kernel.isRowValue(kernel.outputs[0]));
  for (std::size_t k = 1; k < kernel.inputs.size(); ++k)
    EXPECT_FALSE(kernel.isRowValue(kernel.inputs[k]));

  const std::vector<Tensor> parameters = kernelParameterTensors(layer_, params_, DType::F64);
  std::vector<const Tensor*> inputs = {&x_};
  for (const Tensor& tensor : parameters) inputs.push_back(&tensor);
  const std::vector<Tensor> outputs = referenceRunKernel(kernel, kRowCount, inputs);
  ASSERT_EQ(outputs.size(), 1u);
  EXPECT_LT(relativeError(outputs[0], referenceLayerForward(layer_, params_, x_)), 1e-12);
}

TEST_P(StructureKernels, BackwardKernelMatchesTheLayer) {
  const KernelProgram kernel = backwardKernel(layer_, DType::F64);
  const std::set<OpKind> allowed = {OpKind::Contract, OpKind::Reshape,  OpKind::Permute,
                                    OpKind::Pad,      OpKind::Truncate, OpKind::Add};
  for (const ir::Op& op : kernel.ops)
    EXPECT_TRUE(allowed.count(op.kind)) << ir::opKindName(op.kind);
  const int numParams = countNonGainParams(layer_);
  ASSERT_EQ(static_cast<int>(kernel.inputs.size()), 2 + numParams);
  ASSERT_EQ(static_cast<int>(kernel.outputs.size()), 1 + numParams);

  const std::vector<Tensor> parameters = kernelParameterTensors(layer_, params_, DType::F64);
  std::vector<const Tensor*> inputs = {&x_};
  for (const Tensor& tensor : parameters) inputs.push_back(&tensor);
  inputs.push_back(&dy_);
  const std::vector<Tensor> outputs = referenceRunKernel(kernel, kRowCount, inputs);
  ASSERT_EQ(static_cast<int>(outputs.size()), 1 + numParams);

  const LayerGradients expected = referenceLayerBackward(layer_, params_, x_, dy_);
  EXPECT_LT(relativeError(outputs[0], expected.dx), 1e-10) << "dx";
  std::vector<const Tensor*> kernelGradients = pointers(outputs);
  kernelGradients.erase(kernelGradients.begin());  // dx
  const TensorMap dparams = layerParameterGradients(layer_, params_, kernelGradients, DType::F64);
  ASSERT_EQ(dparams.size(), layer_.params.size());
  for (const ir::Parameter& param : layer_.params) {
    ASSERT_TRUE(dparams.count(param.name)) << param.name;
    EXPECT_LT(relativeError(dparams.at(param.name), expected.dparams.at(param.name)), 1e-10)
        << "d" << param.name;
  }
}

// The training pair computes what forwardKernel and backwardKernel compute, with the backward
// reading the forward's saved values instead of recomputing them.
TEST_P(StructureKernels, TrainingKernelsMatchTheLayer) {
  const TrainingKernels training = trainingKernels(layer_, DType::F64);
  const KernelProgram& forward = training.forward;
  const KernelProgram& backward = training.backward;
  const int numParams = countNonGainParams(layer_);
  ASSERT_EQ(forward.outputs.size(), 1 + training.savedCount());
  ASSERT_EQ(forward.inputs.size(), forwardKernel(layer_, DType::F64).inputs.size());
  ASSERT_EQ(backward.inputs.size(), 2 + numParams + training.savedCount());
  ASSERT_EQ(static_cast<int>(backward.outputs.size()), 1 + numParams);
  for (std::size_t k = 1; k < forward.outputs.size(); ++k) {
    EXPECT_TRUE(forward.isRowValue(forward.outputs[k])) << "saved value " << k;
    EXPECT_EQ(forward.values[forward.outputs[k]].shape,
              backward.values[backward.inputs[2 + numParams + k - 1]].shape);
  }
  auto contractions = [](const KernelProgram& program) {
    return std::count_if(program.ops.begin(), program.ops.end(),
                         [](const ir::Op& op) { return op.kind == OpKind::Contract; });
  };
  // A saved value is work the backward no longer does.
  EXPECT_LE(contractions(backward), contractions(backwardKernel(layer_, DType::F64)));
  if (training.savedCount() > 0) {
    EXPECT_LT(contractions(backward), contractions(backwardKernel(layer_, DType::F64)));
  }

  const std::vector<Tensor> parameters = kernelParameterTensors(layer_, params_, DType::F64);
  std::vector<const Tensor*> inputs = {&x_};
  for (const Tensor& tensor : parameters) inputs.push_back(&tensor);
  const std::vector<Tensor> forwardOutputs = referenceRunKernel(forward, kRowCount, inputs);
  EXPECT_LT(relativeError(forwardOutputs[0], referenceLayerForward(layer_, params_, x_)), 1e-12);
  inputs.push_back(&dy_);
  for (std::size_t k = 1; k < forwardOutputs.size(); ++k) inputs.push_back(&forwardOutputs[k]);
  const std::vector<Tensor> outputs = referenceRunKernel(backward, kRowCount, inputs);

  const LayerGradients expected = referenceLayerBackward(layer_, params_, x_, dy_);
  EXPECT_LT(relativeError(outputs[0], expected.dx), 1e-10) << "dx";
  std::vector<const Tensor*> kernelGradients = pointers(outputs);
  kernelGradients.erase(kernelGradients.begin());
  const TensorMap dparams = layerParameterGradients(layer_, params_, kernelGradients, DType::F64);
  for (const ir::Parameter& param : layer_.params)
    EXPECT_LT(relativeError(dparams.at(param.name), expected.dparams.at(param.name)), 1e-10)
        << "d" << param.name;
}

// Laying intermediates out for their readers changes where values live, never what the
// forward and the recomputing backward compute.
TEST_P(StructureKernels, IntermediatesOrderedForReadersComputeTheSame) {
  const std::vector<Tensor> parameters = kernelParameterTensors(layer_, params_, DType::F64);
  std::vector<const Tensor*> inputs = {&x_};
  for (const Tensor& tensor : parameters) inputs.push_back(&tensor);
  const KernelProgram forward = forwardKernel(layer_, DType::F64);
  const KernelProgram orderedForward = orderIntermediatesForReaders(forward);
  checkKernelProgram(orderedForward);
  EXPECT_LT(relativeError(referenceRunKernel(orderedForward, kRowCount, inputs)[0],
                          referenceRunKernel(forward, kRowCount, inputs)[0]),
            1e-14);
  inputs.push_back(&dy_);
  const KernelProgram backward = backwardKernel(layer_, DType::F64);
  const KernelProgram orderedBackward = orderIntermediatesForReaders(backward);
  checkKernelProgram(orderedBackward);
  const std::vector<Tensor> expected = referenceRunKernel(backward, kRowCount, inputs);
  const std::vector<Tensor> got = referenceRunKernel(orderedBackward, kRowCount, inputs);
  ASSERT_EQ(got.size(), expected.size());
  for (std::size_t k = 0; k < got.size(); ++k) EXPECT_LT(relativeError(got[k], expected[k]), 1e-14) << k;
}

INSTANTIATE_TEST_SUITE_P(AllStructures, StructureKernels, ::testing::ValuesIn(structureCases()),
                         caseName);

TEST(StructureKernelPrograms, TheCasesCoverPaddingTruncationAndNorm) {
  std::set<OpKind> kinds;
  int normalised = 0;
  for (const StructureCase& c : structureCases()) {
    const ir::LayerProgram layer = buildLayer(c.spec);
    for (const ir::Op& op : layer.ops) {
      kinds.insert(op.kind);
      normalised += op.kind == OpKind::WeightNorm;
    }
  }
  EXPECT_TRUE(kinds.count(OpKind::Pad));
  EXPECT_TRUE(kinds.count(OpKind::Truncate));
  EXPECT_GT(normalised, 0);
}

TEST(StructureKernelPrograms, DenseBackwardIsTheTwoTransposedProducts) {
  const KernelProgram kernel = backwardKernel(buildLayer("dense(in=6, out=5)"), DType::F32);
  ASSERT_EQ(kernel.ops.size(), 2u);
  EXPECT_EQ(kernel.ops[0].equation, "zo,io->zi");                       // dx = dy W^T
  EXPECT_EQ(kernel.ops[1].equation, "zi,zo->io");                       // dW = x^T dy
  EXPECT_EQ(kernel.values[kernel.inputs[2]].shape, (Shape{kRows, 5}));  // dy
  EXPECT_EQ(kernel.outputs, (std::vector<ir::ValueId>{kernel.ops[0].result, kernel.ops[1].result}));
  EXPECT_EQ(kernel.ops[0].inputs, (std::vector<ir::ValueId>{kernel.inputs[2], kernel.inputs[1]}));
  EXPECT_EQ(kernel.ops[1].inputs, (std::vector<ir::ValueId>{kernel.inputs[0], kernel.inputs[2]}));
}

// keepOutputs: dense's backward without dx is the dW product alone, with the same inputs; it
// runs to the same dW as the whole program.
// BTT saves the first core's result t (N, a, c, r), so its backward does 4 contractions instead
// of 5, in the order dW1 (a GEMM per c summed over the rows) reads it: (N, c, a, r), written so
// by the contraction that makes it, which the second core's contraction then reads. Dense has
// nothing worth saving (its gradients read x, W and dy only), so its pair is the plain one.
TEST(StructureKernelPrograms, TrainingKernelsSaveWhatTheBackwardRecomputes) {
  auto contractions = [](const KernelProgram& program) {
    return std::count_if(program.ops.begin(), program.ops.end(),
                         [](const ir::Op& op) { return op.kind == OpKind::Contract; });
  };
  const ir::LayerProgram btt = buildLayer("btt(in=8, out=64, rank=2)");
  const TrainingKernels bttTraining = trainingKernels(btt, DType::F32);
  ASSERT_EQ(bttTraining.savedCount(), 1u);
  const KernelProgram& forward = bttTraining.forward;
  const ir::ValueId saved = forward.outputs[1];
  EXPECT_EQ(forward.values[saved].shape, (Shape{kRows, 8, 4, 2}));
  EXPECT_EQ(contractions(backwardKernel(btt, DType::F32)), 5);
  EXPECT_EQ(contractions(bttTraining.backward), 4);
  EXPECT_EQ(contractions(forward), 2);
  std::vector<std::string> equations;
  for (const ir::Op& op : forward.ops)
    if (op.kind == OpKind::Contract) equations.push_back(op.equation);
  EXPECT_EQ(equations, (std::vector<std::string>{"zab,abcr->zcar", "zcar,card->zcd"}));
  for (const ir::Op& op : forward.ops) EXPECT_NE(op.kind, OpKind::Permute);

  const ir::LayerProgram dense = buildLayer("dense(in=6, out=5)");
  const TrainingKernels denseTraining = trainingKernels(dense, DType::F32);
  EXPECT_EQ(denseTraining.savedCount(), 0u);
  EXPECT_EQ(denseTraining.forward.fingerprint(), forwardKernel(dense, DType::F32).fingerprint());
  EXPECT_EQ(denseTraining.backward.fingerprint(), backwardKernel(dense, DType::F32).fingerprint());
}

// BTT's forward reads t (N, a, c, r) per c; laid out for that reader it is (N, c, a, r), as the
// training forward saves it. The recomputing backward's only reader of t is dW1, which wants
// the same order; dense has no intermediates.
TEST(StructureKernelPrograms, IntermediatesOrderedForReadersTakeTheReadersOrder) {
  const ir::LayerProgram btt = buildLayer("btt(in=8, out=64, rank=2)");
  auto equations = [](const KernelProgram& program) {
    std::vector<std::string> result;
    for (const ir::Op& op : program.ops)
      if (op.kind == OpKind::Contract) result.push_back(op.equation);
    return result;
  };
  const KernelProgram forward = orderIntermediatesForReaders(forwardKernel(btt, DType::F32));
  EXPECT_EQ(equations(forward), (std::vector<std::string>{"zab,abcr->zcar", "zcar,card->zcd"}));
  EXPECT_EQ(equations(forward), equations(trainingKernels(btt, DType::F32).forward));
  const std::vector<std::string> backward =
      equations(orderIntermediatesForReaders(backwardKernel(btt, DType::F32)));
  ASSERT_EQ(backward.size(), 5u);
  EXPECT_EQ(backward[0], "zab,abcr->zcar");
  EXPECT_EQ(backward[2], "zcar,zcd->card");
  const KernelProgram dense = forwardKernel(buildLayer("dense(in=6, out=5)"), DType::F32);
  EXPECT_EQ(orderIntermediatesForReaders(dense).fingerprint(), dense.fingerprint());
}

TEST(StructureKernelPrograms, KeepOutputsDropsTheOpsOnlyOtherOutputsNeed) {
  const KernelProgram backward = backwardKernel(buildLayer("dense(in=6, out=5)"), DType::F64);
  const KernelProgram dw = keepOutputs(backward, {1});
  ASSERT_EQ(dw.ops.size(), 1u);
  EXPECT_EQ(dw.ops[0].equation, "zi,zo->io");
  EXPECT_EQ(dw.inputs, backward.inputs);
  EXPECT_EQ(dw.outputs, (std::vector<ir::ValueId>{backward.outputs[1]}));
  EXPECT_NE(dw.fingerprint(), backward.fingerprint());
  checkKernelProgram(dw);

  std::mt19937_64 rng(3);
  std::vector<Tensor> inputs;
  for (ir::ValueId id : backward.inputs) {
    Shape shape = backward.values[id].shape;
    if (shape[0] == kRows) shape[0] = 4;
    inputs.push_back(randomTensor(shape, rng));
  }
  const std::vector<Tensor> all = referenceRunKernel(backward, 4, pointers(inputs));
  const std::vector<Tensor> one = referenceRunKernel(dw, 4, pointers(inputs));
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(relativeError(one[0], all[1]), 0.0);

  // BTT's dx needs the output gradient through both cores, not the recomputed forward.
  const KernelProgram btt = backwardKernel(buildLayer("btt(in=16, out=12, rank=2)"), DType::F32);
  const KernelProgram dx = keepOutputs(btt, {0});
  EXPECT_LT(dx.ops.size(), btt.ops.size());
  for (const ir::Op& op : dx.ops)
    EXPECT_TRUE(std::find(op.inputs.begin(), op.inputs.end(), btt.inputs[0]) == op.inputs.end())
        << "dx does not read x: " << op.equation;
  EXPECT_THROW(keepOutputs(btt, {3}), UserError);
  EXPECT_THROW(keepOutputs(btt, {1, 1}), UserError);
}

TEST(StructureKernelPrograms, Float32KernelRoundsTheResult) {
  const ir::LayerProgram layer = buildLayer("btt(in=16, out=12, rank=2, norm)");
  const TensorMap params = initLayerParams(layer, 3, DType::F32);
  std::mt19937_64 rng(5);
  const Tensor x = randomTensor({2, 16}, rng).to(DType::F32);
  const std::vector<Tensor> parameters = kernelParameterTensors(layer, params, DType::F32);
  std::vector<const Tensor*> inputs = {&x};
  for (const Tensor& tensor : parameters) inputs.push_back(&tensor);
  const std::vector<Tensor> outputs =
      referenceRunKernel(forwardKernel(layer, DType::F32), 2, inputs);
  ASSERT_EQ(outputs[0].dtype(), DType::F32);
  EXPECT_LT(relativeError(outputs[0], referenceLayerForward(layer, params, x)), 1e-6);
}

// ---- hand-built layers: Permute, Add and a value used twice, and the rejected gradients ----

class LayerBuilder {
 public:
  LayerBuilder(int64_t dIn, int64_t dOut) {
    layer_.spec = "hand-built";
    layer_.dIn = dIn;
    layer_.dOut = dOut;
    layer_.input = value("x", {kRows, dIn});
  }
  ir::ValueId value(const std::string& name, Shape shape) {
    layer_.values.push_back({name, std::move(shape)});
    return static_cast<ir::ValueId>(layer_.values.size() - 1);
  }
  ir::ValueId param(const std::string& name, Shape shape) {
    ir::Parameter parameter;
    parameter.name = name;
    parameter.shape = shape;
    parameter.value = value(name, shape);
    layer_.params.push_back(parameter);
    return parameter.value;
  }
  ir::ValueId op(OpKind kind, std::vector<ir::ValueId> inputs, Shape shape,
                 const std::function<void(ir::Op&)>& configure = {}) {
    ir::Op op;
    op.kind = kind;
    op.inputs = std::move(inputs);
    if (configure) configure(op);
    op.result = value("t" + std::to_string(layer_.ops.size()), std::move(shape));
    layer_.ops.push_back(op);
    return op.result;
  }
  ir::ValueId contract(const std::string& equation, std::vector<ir::ValueId> inputs, Shape shape) {
    return op(OpKind::Contract, std::move(inputs), std::move(shape),
              [&](ir::Op& op) { op.equation = equation; });
  }
  ir::LayerProgram finish(ir::ValueId output) {
    layer_.output = output;
    return layer_;
  }

 private:
  ir::LayerProgram layer_;
};

// x (N, 12) viewed (N, 2, 3, 2), axes rotated to (N, 2, 2, 3), times W (3, 4), flattened to 16,
// cut to 13, padded to 14, plus x V with V (12, 14): every op kind, and x used twice.
ir::LayerProgram everyOpLayer() {
  LayerBuilder b(12, 14);
  const ir::ValueId w = b.param("W", {3, 4});
  const ir::ValueId v = b.param("V", {12, 14});
  const ir::ValueId viewed = b.op(OpKind::Reshape, {0}, {kRows, 2, 3, 2}, [](ir::Op& op) {
    op.shape = {kRows, 2, 3, 2};
  });
  const ir::ValueId rotated = b.op(OpKind::Permute, {viewed}, {kRows, 2, 2, 3}, [](ir::Op& op) {
    op.perm = {0, 3, 1, 2};
  });
  const ir::ValueId product = b.contract("zabc,cd->zabd", {rotated, w}, {kRows, 2, 2, 4});
  const ir::ValueId flat = b.op(OpKind::Reshape, {product}, {kRows, 16}, [](ir::Op& op) {
    op.shape = {kRows, 16};
  });
  const ir::ValueId cut = b.op(OpKind::Truncate, {flat}, {kRows, 13}, [](ir::Op& op) {
    op.axis = 1;
    op.size = 13;
  });
  const ir::ValueId padded = b.op(OpKind::Pad, {cut}, {kRows, 14}, [](ir::Op& op) {
    op.axis = 1;
    op.size = 14;
  });
  const ir::ValueId direct = b.contract("zi,io->zo", {0, v}, {kRows, 14});
  return b.finish(b.op(OpKind::Add, {padded, direct}, {kRows, 14}));
}

TEST(HandBuiltKernels, EveryOpKindDifferentiates) {
  const ir::LayerProgram layer = everyOpLayer();
  std::mt19937_64 rng(21);
  const TensorMap params = {{"W", randomTensor({3, 4}, rng)}, {"V", randomTensor({12, 14}, rng)}};
  const Tensor x = randomTensor({4, 12}, rng);
  const Tensor dy = randomTensor({4, 14}, rng);
  const KernelProgram kernel = backwardKernel(layer, DType::F64);
  std::set<OpKind> kinds;
  for (const ir::Op& op : kernel.ops) kinds.insert(op.kind);
  EXPECT_EQ(kinds, (std::set<OpKind>{OpKind::Contract, OpKind::Reshape, OpKind::Permute,
                                     OpKind::Pad, OpKind::Truncate, OpKind::Add}));
  const std::vector<Tensor> outputs =
      referenceRunKernel(kernel, 4, {&x, &params.at("W"), &params.at("V"), &dy});
  const LayerGradients expected = referenceLayerBackward(layer, params, x, dy);
  ASSERT_EQ(outputs.size(), 3u);
  EXPECT_LT(relativeError(outputs[0], expected.dx), 1e-12);
  EXPECT_LT(relativeError(outputs[1], expected.dparams.at("W")), 1e-12);
  EXPECT_LT(relativeError(outputs[2], expected.dparams.at("V")), 1e-12);
}

TEST(HandBuiltKernels, AddPassesTheSameGradientToBothInputs) {
  // y = x + x W: dx = dy + dy W^T (an Add), dW = x^T dy.
  LayerBuilder b(3, 3);
  const ir::ValueId w = b.param("W", {3, 3});
  const ir::ValueId product = b.contract("zi,io->zo", {0, w}, {kRows, 3});
  const ir::LayerProgram layer = b.finish(b.op(OpKind::Add, {0, product}, {kRows, 3}));
  std::mt19937_64 rng(22);
  const Tensor wTensor = randomTensor({3, 3}, rng);
  const Tensor x = randomTensor({2, 3}, rng);
  const Tensor dy = randomTensor({2, 3}, rng);
  const std::vector<Tensor> outputs =
      referenceRunKernel(backwardKernel(layer, DType::F64), 2, {&x, &wTensor, &dy});
  ASSERT_EQ(outputs.size(), 2u);
  for (int n = 0; n < 2; ++n)
    for (int i = 0; i < 3; ++i) {
      double dx = dy.get(n * 3 + i);
      for (int o = 0; o < 3; ++o) dx += dy.get(n * 3 + o) * wTensor.get(i * 3 + o);
      EXPECT_NEAR(outputs[0].get(n * 3 + i), dx, 1e-12);
    }
  for (int i = 0; i < 3; ++i)
    for (int o = 0; o < 3; ++o) {
      double dw = 0;
      for (int n = 0; n < 2; ++n) dw += x.get(n * 3 + i) * dy.get(n * 3 + o);
      EXPECT_NEAR(outputs[1].get(i * 3 + o), dw, 1e-12);
    }
}

TEST(HandBuiltKernels, OutputsNeverAliasInputs) {
  // The identity layer: y is x and dx is dy, yet every output gets its own buffer (a copy).
  LayerBuilder b(3, 3);
  const ir::LayerProgram layer = b.finish(0);
  std::mt19937_64 rng(23);
  const Tensor x = randomTensor({2, 3}, rng);
  for (const KernelProgram& kernel :
       {forwardKernel(layer, DType::F64), backwardKernel(layer, DType::F64)}) {
    ASSERT_EQ(kernel.outputs.size(), 1u);
    EXPECT_EQ(std::count(kernel.inputs.begin(), kernel.inputs.end(), kernel.outputs[0]), 0);
    const std::vector<const Tensor*> inputs(kernel.inputs.size(), &x);  // x, and x's values as dy
    const std::vector<Tensor> outputs = referenceRunKernel(kernel, 2, inputs);
    EXPECT_EQ(relativeError(outputs[0], x), 0);
  }
}

TEST(HandBuiltKernels, RejectsGradientsAnEinsumCannotWrite) {
  {  // a repeated label inside the differentiated operand: y = x * trace(W)
    LayerBuilder b(3, 3);
    const ir::ValueId w = b.param("W", {3, 3});
    const ir::LayerProgram layer = b.finish(b.contract("zi,jj->zi", {0, w}, {kRows, 3}));
    EXPECT_NO_THROW(forwardKernel(layer, DType::F32));
    try {
      backwardKernel(layer, DType::F32);
      ADD_FAILURE() << "expected a UserError";
    } catch (const UserError& error) {
      EXPECT_NE(std::string(error.what()).find("zi,jj->zi"), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find("'j'"), std::string::npos) << error.what();
    }
  }
  {  // a label only in the differentiated operand: y[z,i] = x[z,i] sum_j W[i,j]
    LayerBuilder b(3, 3);
    const ir::ValueId w = b.param("W", {3, 2});
    const ir::LayerProgram layer = b.finish(b.contract("zi,ij->zi", {0, w}, {kRows, 3}));
    try {
      backwardKernel(layer, DType::F32);
      ADD_FAILURE() << "expected a UserError";
    } catch (const UserError& error) {
      EXPECT_NE(std::string(error.what()).find("zi,ij->zi"), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find("'j'"), std::string::npos) << error.what();
    }
  }
  {  // a parameter broadcast along a label: y[z,o] = sum_i x[z,i] B[0,o], B (1, 3), dIn 4
    LayerBuilder b(4, 3);
    const ir::ValueId bias = b.param("B", {1, 3});
    const ir::LayerProgram layer = b.finish(b.contract("zi,io->zo", {0, bias}, {kRows, 3}));
    EXPECT_THROW(backwardKernel(layer, DType::F32), UserError);
  }
}

TEST(HandBuiltKernels, RejectsMalformedLayers) {
  const ir::LayerProgram good = everyOpLayer();
  ir::LayerProgram badId = good;
  badId.ops[2].inputs[1] = 1000;
  EXPECT_THROW(forwardKernel(badId, DType::F32), UserError);
  ir::LayerProgram badParam = good;
  badParam.params[0].value = -3;
  EXPECT_THROW(forwardKernel(badParam, DType::F32), UserError);
  ir::LayerProgram badEquation = good;
  badEquation.ops[2].equation = "zabc,cd->zabe";
  EXPECT_THROW(forwardKernel(badEquation, DType::F32), UserError);
  ir::LayerProgram ellipsis = good;
  ellipsis.ops[2].equation = "z...c,cd->z...d";
  EXPECT_THROW(forwardKernel(ellipsis, DType::F32), UserError);
  ir::LayerProgram wrongShape = good;
  wrongShape.values[wrongShape.ops[3].result].shape = {kRows, 15};
  EXPECT_THROW(backwardKernel(wrongShape, DType::F32), UserError);
  ir::LayerProgram normOfActivation = good;  // weight_norm applies to parameters only
  ir::Op norm;
  norm.kind = OpKind::WeightNorm;
  norm.inputs = {0};
  norm.normSigma = 1;
  norm.result = 1;  // unused here: rejected before
  normOfActivation.ops.insert(normOfActivation.ops.begin(), norm);
  EXPECT_THROW(forwardKernel(normOfActivation, DType::F32), UserError);
}

// ---- fingerprints ----

TEST(Fingerprint, IsTheCanonicalText) {
  EXPECT_EQ(forwardKernel(buildLayer("dense(in=6, out=5)"), DType::F32).fingerprint(),
            "einjit kernel v1\n"
            "dtype float32\n"
            "in %0 (N, 6)\n"
            "in %1 (6, 5)\n"
            "%2 (N, 5) = contract \"zi,io->zo\" %0 %1\n"
            "out %2\n");
}

TEST(Fingerprint, EqualForEqualPrograms) {
  for (const char* spec : kSpecs) {
    const ir::LayerProgram first = buildLayer(spec);
    const ir::LayerProgram second = buildLayer(spec);
    EXPECT_EQ(forwardKernel(first, DType::F32).fingerprint(),
              forwardKernel(second, DType::F32).fingerprint())
        << spec;
    EXPECT_EQ(backwardKernel(first, DType::F32).fingerprint(),
              backwardKernel(second, DType::F32).fingerprint())
        << spec;
  }
  // Names (of the program and of its values) and value ids do not matter.
  const KernelProgram kernel = backwardKernel(buildLayer("btt(in=16, out=12, rank=2)"), DType::F32);
  KernelProgram renamed = kernel;
  renamed.name = "other";
  for (ir::Value& value : renamed.values) value.name += "_renamed";
  EXPECT_EQ(renamed.fingerprint(), kernel.fingerprint());
  KernelProgram renumbered = kernel;  // values stored in reverse order
  const int count = static_cast<int>(kernel.values.size());
  std::reverse(renumbered.values.begin(), renumbered.values.end());
  auto flip = [&](ir::ValueId& id) { id = count - 1 - id; };
  for (ir::ValueId& id : renumbered.inputs) flip(id);
  for (ir::ValueId& id : renumbered.outputs) flip(id);
  for (ir::Op& op : renumbered.ops) {
    for (ir::ValueId& id : op.inputs) flip(id);
    flip(op.result);
  }
  EXPECT_EQ(renumbered.fingerprint(), kernel.fingerprint());
}

TEST(Fingerprint, DiffersWhenGeneratedCodeWould) {
  const ir::LayerProgram layer = buildLayer("monarch(in=10, out=14, blocks=4)");
  const KernelProgram base = forwardKernel(layer, DType::F32);
  const std::string fingerprint = base.fingerprint();
  std::set<std::string> seen = {fingerprint};
  auto expectNew = [&](const KernelProgram& changed, const std::string& what) {
    EXPECT_TRUE(seen.insert(changed.fingerprint()).second) << what;
  };
  expectNew(forwardKernel(layer, DType::F64), "dtype");
  expectNew(forwardKernel(buildLayer("monarch(in=10, out=13, blocks=4)"), DType::F32), "sizes");
  expectNew(backwardKernel(layer, DType::F32), "backward");

  KernelProgram swapped = base;  // the same op, other buffer order
  std::swap(swapped.inputs[1], swapped.inputs[2]);
  expectNew(swapped, "input order");

  // Equal shapes, other equation: x (N, 4, 4) times W (4, 4) along either axis of x.
  LayerBuilder b(16, 16);
  const ir::ValueId w = b.param("W", {4, 4});
  const ir::ValueId viewed = b.op(OpKind::Reshape, {0}, {kRows, 4, 4}, [](ir::Op& op) {
    op.shape = {kRows, 4, 4};
  });
  const ir::ValueId product = b.contract("zab,bc->zac", {viewed, w}, {kRows, 4, 4});
  const ir::LayerProgram square =
      b.finish(b.op(OpKind::Reshape, {product}, {kRows, 16}, [](ir::Op& op) {
        op.shape = {kRows, 16};
      }));
  const KernelProgram squareKernel = forwardKernel(square, DType::F32);
  expectNew(squareKernel, "square");
  KernelProgram otherAxis = squareKernel;
  otherAxis.ops[1].equation = "zab,ac->zcb";
  expectNew(otherAxis, "equation");
  KernelProgram transposed = squareKernel;  // a Permute in between: perm and then its inverse
  ir::Op permute;
  permute.kind = OpKind::Permute;
  permute.inputs = {transposed.ops[0].result};
  permute.perm = {0, 2, 1};
  permute.result = static_cast<ir::ValueId>(transposed.values.size());
  transposed.values.push_back({"transposed", {kRows, 4, 4}});
  transposed.ops.insert(transposed.ops.begin() + 1, permute);
  transposed.ops[2].inputs[0] = permute.result;
  expectNew(transposed, "permute");

  const KernelProgram backward = backwardKernel(layer, DType::F32);
  KernelProgram outputsSwapped = backward;
  std::swap(outputsSwapped.outputs[1], outputsSwapped.outputs[2]);
  expectNew(outputsSwapped, "output order");
}

TEST(Fingerprint, RejectsMalformedPrograms) {
  KernelProgram kernel = forwardKernel(buildLayer("dense(in=6, out=5)"), DType::F32);
  kernel.ops[0].inputs.push_back(42);
  EXPECT_THROW(kernel.fingerprint(), UserError);
  EXPECT_FALSE(kernel.isRowValue(42));
  EXPECT_FALSE(kernel.isRowValue(-1));
}

// ---- classic einsums ----

struct EinsumCase {
  std::string spec;
  std::vector<Shape> shapes;
};

class EinsumKernels : public ::testing::TestWithParam<EinsumCase> {};

TEST_P(EinsumKernels, MatchReferenceEinsum) {
  const EinsumCase& c = GetParam();
  std::mt19937_64 rng(31);
  std::vector<Tensor> operands;
  for (const Shape& shape : c.shapes) operands.push_back(randomTensor(shape, rng));
  const BoundEinsum einsum = bindEinsum(parseEinsum(c.spec), c.shapes);
  const ContractionPlan plan =
      planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
  const KernelProgram kernel = einsumKernel(einsum, plan, DType::F64);
  ASSERT_EQ(kernel.ops.size(), plan.steps.size());
  ASSERT_EQ(kernel.inputs.size(), c.shapes.size());
  for (std::size_t k = 0; k < c.shapes.size(); ++k)
    EXPECT_EQ(kernel.values[kernel.inputs[k]].shape, c.shapes[k]);
  for (const ir::Op& op : kernel.ops) {
    EXPECT_EQ(op.kind, OpKind::Contract);
    EXPECT_LE(op.inputs.size(), 2u);
    for (char ch : op.equation)
      EXPECT_TRUE(std::isalpha(static_cast<unsigned char>(ch)) || ch == ',' || ch == '-' ||
                  ch == '>')
          << op.equation;
  }
  for (ir::ValueId id = 0; id < static_cast<ir::ValueId>(kernel.values.size()); ++id)
    EXPECT_FALSE(kernel.isRowValue(id));
  const std::vector<Tensor> outputs = referenceRunKernel(kernel, 0, pointers(operands));
  ASSERT_EQ(outputs.size(), 1u);
  const Tensor expected = referenceEinsum(c.spec, pointers(operands));
  EXPECT_LT(relativeError(outputs[0], expected), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(
    Classic, EinsumKernels,
    ::testing::Values(EinsumCase{"ij,jk->ik", {{2, 3}, {3, 4}}},
                      EinsumCase{"ij,jk,kl->il", {{2, 3}, {3, 4}, {4, 5}}},
                      EinsumCase{"ab,bc,cd,de->ae", {{5, 2}, {2, 6}, {6, 3}, {3, 4}}},
                      EinsumCase{"ii->", {{4, 4}}}, EinsumCase{"ii->i", {{4, 4}}},
                      EinsumCase{"ijk->kji", {{2, 3, 4}}}, EinsumCase{"ij,ij->", {{3, 4}, {3, 4}}},
                      EinsumCase{"bij,bjk->bik", {{2, 3, 4}, {2, 4, 5}}},
                      EinsumCase{"aab,bc->ac", {{3, 3, 2}, {2, 4}}},
                      EinsumCase{"ij,j->ij", {{3, 1}, {4}}},
                      EinsumCase{"ij,jk->ik", {{3, 1}, {5, 2}}},
                      EinsumCase{"...ij,...jk->...ik", {{1, 2, 3}, {4, 3, 2}}},
                      EinsumCase{",ij->ij", {{}, {2, 3}}}, EinsumCase{"i,->i", {{3}, {}}},
                      EinsumCase{",->", {{}, {}}}, EinsumCase{"i,i,i->", {{5}, {5}, {5}}},
                      EinsumCase{"ab,cd->abcd", {{2, 3}, {1, 4}}},
                      EinsumCase{"ij,jk->ik", {{0, 3}, {3, 2}}}),
    [](const ::testing::TestParamInfo<EinsumCase>& info) {
      return "case" + std::to_string(info.index);
    });

TEST(EinsumKernelErrors, MoreThan52Labels) {
  // 52 letters plus one ellipsis dimension: 53 labels.
  std::string letters;
  for (char c = 'a'; c <= 'z'; ++c) letters += c;
  for (char c = 'A'; c <= 'Z'; ++c) letters += c;
  const BoundEinsum einsum = bindEinsum(parseEinsum("..." + letters + "->..."), {Shape(53, 1)});
  ASSERT_EQ(einsum.numLabels(), 53);
  const ContractionPlan plan =
      planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
  EXPECT_THROW(einsumKernel(einsum, plan, DType::F32), UserError);

  // 52 labels are fine.
  const BoundEinsum fits = bindEinsum(parseEinsum(letters + "->"), {Shape(52, 1)});
  EXPECT_NO_THROW(einsumKernel(
      fits, planContraction(fits.inputLabels, fits.outputLabels, fits.labelSize), DType::F32));
}

TEST(EinsumKernelErrors, PlanThatDoesNotFit) {
  const BoundEinsum einsum = bindEinsum(parseEinsum("ij,jk,kl->il"), {{2, 3}, {3, 4}, {4, 5}});
  ContractionPlan plan = planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
  ContractionPlan outOfRange = plan;
  outOfRange.steps[0].rhs = 7;
  EXPECT_THROW(einsumKernel(einsum, outOfRange, DType::F32), UserError);
  ContractionPlan truncated = plan;
  truncated.steps.pop_back();
  EXPECT_THROW(einsumKernel(einsum, truncated, DType::F32), UserError);
  ContractionPlan sumsTooEarly = plan;  // the first step sums labels that are still needed
  sumsTooEarly.steps[0].resultLabels.clear();
  EXPECT_THROW(einsumKernel(einsum, sumsTooEarly, DType::F32), UserError);
  EXPECT_THROW(einsumKernel(einsum, ContractionPlan{}, DType::F32), UserError);
  BoundEinsum malformed = einsum;
  malformed.inputLabels[0].push_back(99);
  EXPECT_THROW(einsumKernel(malformed, plan, DType::F32), UserError);
}

}  // namespace
}  // namespace einjit
