// The CUDA C++ the renderer generates compiles with NVRTC to PTX for sm_90a, and ptxas accepts
// that PTX: every structure and shape class (tiny, non-divisible, d = 4096), forward and
// backward, fp32 and bf16, and classic einsums. Skips when NVRTC or ptxas is absent.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "compiler/cuda/CudaEmitter.h"
#include "compiler/cuda/Nvrtc.h"
#include "compiler/kernel/KernelProgram.h"
#include "einjit/error.h"
#include "frontend/einsum/BoundEinsum.h"
#include "frontend/structures/Structures.h"
#include "tests/compiler/cuda/CudaTestSupport.h"

namespace einjit::cuda::testing {
namespace {

constexpr const char* kArch = "sm_90a";
constexpr const char* kPtxas = "/usr/local/cuda/bin/ptxas";

std::vector<std::string> layerSpecs() {
  std::vector<std::string> specs;
  for (const std::string& spec : kSmallStructures) {
    specs.push_back(spec);
    specs.push_back(withNorm(spec));
  }
  for (int rank : {1, 2, 4, 8, 16}) specs.push_back("btt(in=4096, out=4096, rank=" + std::to_string(rank) + ")");
  const std::vector<std::string> more = {
      "btt(in=4096, out=4096, rank=4, cores=3)", "btt(in=1000, out=3000, rank=3)",
      "monarch(in=4096, out=4096, blocks=64)",   "monarch(in=1000, out=3000, blocks=7)",
      "dense(in=4096, out=4096)",                "lowrank(in=4096, out=4096, rank=64)",
      "kron(in=4096, out=4096)",                 "tt(in=4096, out=4096, rank=4, cores=3)",
      "theta(in=4096, out=4096, alpha=0.5, beta=0.25, gamma=0.25, delta=0.25, epsilon=0.5, "
      "phi=0.25, rho=0.25)"};
  specs.insert(specs.end(), more.begin(), more.end());
  return specs;
}

std::string specName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name;
  for (char c : info.param)
    if (std::isalnum(static_cast<unsigned char>(c))) name += c;
  return name + "_" + std::to_string(info.index);
}

// "" if ptxas accepts `ptx`, else its messages.
std::string ptxasProblems(const std::string& ptx) {
  static int counter = 0;
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  const std::string stem =
      (dir / ("einjit-ptxas-" + std::to_string(::getpid()) + "-" + std::to_string(counter++))).string();
  std::ofstream(stem + ".ptx") << ptx;
  const std::string command = std::string(kPtxas) + " -arch=" + kArch + " " + stem + ".ptx -o " + stem +
                              ".cubin > " + stem + ".log 2>&1";
  const int status = std::system(command.c_str());
  std::string log;
  if (status != 0) {
    std::ifstream in(stem + ".log");
    log = std::string(std::istreambuf_iterator<char>(in), {});
    if (log.empty()) log = "ptxas exited with status " + std::to_string(status);
  }
  for (const char* ext : {".ptx", ".cubin", ".log"}) std::filesystem::remove(stem + ext);
  return log;
}

void skipWithoutToolkit() {
  if (const std::string reason = nvrtcUnavailableReason(); !reason.empty())
    GTEST_SKIP() << "NVRTC not available: " << reason;
  if (!std::filesystem::exists(kPtxas)) GTEST_SKIP() << "ptxas not found at " << kPtxas;
}

void expectCompiles(const KernelProgram& program, Precision precision, const std::string& tag) {
  EmitOptions options;
  options.precision = precision;
  const CudaProgram emitted = emitCuda(program, options);
  NvrtcOutput output;
  try {
    output = nvrtcCompile(emitted.source, program.name + ".cu", kArch);
  } catch (const UserError& error) {
    ADD_FAILURE() << tag << ": " << error.what();
    return;
  }
  EXPECT_FALSE(output.cubin.empty()) << tag;
  for (const KernelLaunch& launch : emitted.launches)
    EXPECT_NE(output.ptx.find(".entry " + launch.kernel), std::string::npos) << tag << " lacks " << launch.kernel;
  EXPECT_EQ(ptxasProblems(output.ptx), "") << tag;
}

class NvrtcLayer : public ::testing::TestWithParam<std::string> {};

TEST_P(NvrtcLayer, ForwardAndBackwardCompileForSm90a) {
  skipWithoutToolkit();
  const ir::LayerProgram layer = buildLayer(GetParam());
  for (Precision precision : {Precision::F32, Precision::BF16}) {
    const std::string suffix = precisionName(precision);
    expectCompiles(forwardKernel(layer, DType::F32), precision, GetParam() + " forward " + suffix);
    expectCompiles(backwardKernel(layer, DType::F32), precision, GetParam() + " backward " + suffix);
    // The CPU target's training pair (saved values out of the forward, into the backward); f32
    // only: bf16 changes the storage type, not which buffers a kernel has.
    const TrainingKernels training = trainingKernels(layer, DType::F32);
    if (training.savedCount() > 0 && precision == Precision::F32) {
      expectCompiles(training.forward, precision, GetParam() + " training forward " + suffix);
      expectCompiles(training.backward, precision, GetParam() + " backward from saved " + suffix);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Structures, NvrtcLayer, ::testing::ValuesIn(layerSpecs()), specName);

TEST(NvrtcEinsum, ClassicEinsumsCompileForSm90a) {
  skipWithoutToolkit();
  const std::vector<std::pair<std::string, std::vector<Shape>>> cases = {
      {"ij,jk->ik", {{64, 48}, {48, 33}}},
      {"ii->i", {{7, 7}}},
      {"bij,bjk->bik", {{3, 4, 5}, {1, 5, 2}}},
      {"...i,i->...", {{2, 3, 4}, {4}}},
      {"ab,bc,cd->ad", {{3, 4}, {4, 5}, {5, 2}}}};
  int index = 0;
  for (const auto& [expression, shapes] : cases) {
    const BoundEinsum einsum = bindEinsum(parseEinsum(expression), shapes);
    const ContractionPlan plan = planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
    expectCompiles(einsumKernel(einsum, plan, DType::F32), Precision::F32,
                   "einsum" + std::to_string(index++));
  }
}

TEST(Nvrtc, ReportsCompileErrorsWithTheLog) {
  skipWithoutToolkit();
  try {
    nvrtcCompile("extern \"C\" __global__ void k() { undeclared_name = 1; }", "broken.cu", kArch);
    FAIL() << "a broken source compiled";
  } catch (const UserError& error) {
    EXPECT_NE(std::string(error.what()).find("undeclared_name"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace einjit::cuda::testing
