// The CUDA backend: the cubin disk cache (needs no GPU: hit, miss, corrupted and foreign
// entries, a plan that changed), the message without a GPU, and, on a GPU machine, every
// structure forward and backward against the reference executor (skipped without a GPU).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <string>

#include "compiler/cuda/CudaBackend.h"
#include "compiler/cuda/CudaDriver.h"
#include "einjit/error.h"
#include "frontend/structures/Structures.h"
#include "tests/compiler/cuda/CudaTestSupport.h"

namespace einjit::cuda::testing {
namespace {

class CubinCache : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = std::filesystem::temp_directory_path() /
                 ("einjit-cubin-cache-" + std::to_string(::getpid()) + "-" +
                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(directory_);
    options_.directory = directory_.string();
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }

  CubinLookup lookup(const std::string& key, const std::string& plan, const std::string& cubin) {
    return cachedCubin(key, plan, options_, [&] {
      ++compiles_;
      return cubin;
    });
  }
  std::string entryPath(const std::string& key) const {
    return cpu::cacheEntryPath(directory_.string(), {key, cpu::toHex(cpu::sha256(key))});
  }

  std::filesystem::path directory_;
  cpu::CacheOptions options_;
  int compiles_ = 0;
};

TEST_F(CubinCache, MissThenDiskHit) {
  EXPECT_FALSE(lookup("key A", "plan", "CUBIN-A").diskHit);
  EXPECT_EQ(compiles_, 1);
  const CubinLookup hit = lookup("key A", "plan", "never used");
  EXPECT_TRUE(hit.diskHit);
  EXPECT_EQ(hit.cubin, "CUBIN-A");
  EXPECT_EQ(compiles_, 1);
  EXPECT_FALSE(lookup("key B", "plan", "CUBIN-B").diskHit);  // another key: its own entry
  EXPECT_EQ(compiles_, 2);
}

TEST_F(CubinCache, CorruptedEntryIsRebuiltAndReplaced) {
  lookup("key", "plan", "CUBIN");
  const std::string path = entryPath("key");
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  for (std::size_t position : {std::size_t{0}, bytes.size() / 2, bytes.size() - 1}) {
    std::string damaged = bytes;
    damaged[position] ^= 0x5a;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << damaged;
    const int before = compiles_;
    const CubinLookup rebuilt = lookup("key", "plan", "CUBIN");
    EXPECT_FALSE(rebuilt.diskHit) << "byte " << position;
    EXPECT_EQ(compiles_, before + 1);
    EXPECT_TRUE(lookup("key", "plan", "unused").diskHit) << "entry replaced after byte " << position;
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 3);
  EXPECT_FALSE(lookup("key", "plan", "CUBIN").diskHit);  // truncated
}

TEST_F(CubinCache, ChangedLaunchPlanIsRebuilt) {
  lookup("key", "plan 1", "OLD");
  const CubinLookup fresh = lookup("key", "plan 2", "NEW");
  EXPECT_FALSE(fresh.diskHit);
  EXPECT_EQ(fresh.cubin, "NEW");
}

TEST(CubinPayload, RoundTripsAndRejectsOtherPlans) {
  const std::string payload = encodeCubinPayload("tile 64", std::string("\x7f" "ELF\0bytes", 9));
  EXPECT_EQ(decodeCubinPayload(payload, "tile 64"), std::string("\x7f" "ELF\0bytes", 9));
  EXPECT_FALSE(decodeCubinPayload(payload, "tile 32"));
  EXPECT_FALSE(decodeCubinPayload("no separator", "no separator"));
}

TEST(CudaCacheKey, NamesEverythingThatChangesTheCode) {
  const ir::LayerProgram layer = buildLayer("btt(in=12, out=20, rank=2)");
  const KernelProgram program = forwardKernel(layer, DType::F32);
  EmitOptions options;
  const std::string base = cudaCacheKeyText(program, options, "sm_90a", "13.0");
  EXPECT_NE(base, cudaCacheKeyText(program, options, "sm_80", "13.0"));
  EXPECT_NE(base, cudaCacheKeyText(program, options, "sm_90a", "13.1"));
  EXPECT_NE(base, cudaCacheKeyText(backwardKernel(layer, DType::F32), options, "sm_90a", "13.0"));
  EmitOptions bf16 = options;
  bf16.precision = Precision::BF16;
  EXPECT_NE(base, cudaCacheKeyText(program, bf16, "sm_90a", "13.0"));
  EmitOptions smaller = options;
  smaller.sharedBytesBudget = 48 * 1024;
  EXPECT_NE(base, cudaCacheKeyText(program, smaller, "sm_90a", "13.0"));
  EXPECT_EQ(base, cudaCacheKeyText(forwardKernel(layer, DType::F32), options, "sm_90a", "13.0"));
}

TEST(CudaDriver, ArchitectureNames) {
  EXPECT_EQ(archForComputeCapability(9, 0), "sm_90a");
  EXPECT_EQ(archForComputeCapability(8, 6), "sm_86");
  EXPECT_EQ(archForComputeCapability(10, 0), "sm_100a");
}

TEST(CudaDriver, WithoutAGpuEveryEntryPointSaysWhy) {
  if (cudaAvailable()) GTEST_SKIP() << "this machine has a GPU";
  const std::string reason = cudaUnavailableReason();
  EXPECT_FALSE(reason.empty());
  const ir::LayerProgram layer = buildLayer("dense(in=3, out=2)");
  const TensorMap params = initLayerParams(layer, 0, DType::F32);
  try {
    cudaLayerForward(layer, params, Tensor(DType::F32, {4, 3}));
    FAIL() << "ran without a GPU";
  } catch (const UserError& error) {
    EXPECT_EQ(std::string(error.what()), reason);
  }
}

// ---- on a GPU ----

struct GpuCase {
  std::string spec;
  Precision precision;
};

class CudaLayer : public ::testing::TestWithParam<GpuCase> {};

Tensor patterned(const Shape& shape, int salt) {
  Tensor tensor(DType::F32, shape);
  for (int64_t i = 0; i < tensor.numel(); ++i)
    tensor.set(i, static_cast<double>((i * 7919 + salt * 104729) % 2001) / 1000.0 - 1.0);
  return tensor;
}

// fp32: 1e-4 relative (fp32 accumulation over at most a few thousand terms, vs the reference's
// double). bf16: inputs, weights and every stored output carry a relative rounding error of
// 2^-9 ~ 0.2%; through two or three contractions and the row sums of the parameter gradients
// (errors of random sign, partly cancelling) 3% of the output scale bounds it with margin.
TEST_P(CudaLayer, ForwardAndBackwardMatchReference) {
  if (!cudaAvailable()) GTEST_SKIP() << cudaUnavailableReason();
  const GpuCase& c = GetParam();
  const double tolerance = c.precision == Precision::BF16 ? 3e-2 : 1e-4;
  const ir::LayerProgram layer = buildLayer(c.spec);
  const TensorMap params = initLayerParams(layer, 3, DType::F32);
  for (const int64_t rows : {int64_t{1}, int64_t{67}, int64_t{1000}}) {
    const Tensor x = patterned({rows, layer.dIn}, 1), dy = patterned({rows, layer.dOut}, 2);
    const LayerGradients expected = referenceLayerBackward(layer, params, x, dy);
    CudaOptions options;
    options.precision = c.precision;
    EXPECT_LE(relativeError(cudaLayerForward(layer, params, x, options), expected.y), tolerance);
    const LayerGradients actual = cudaLayerBackward(layer, params, x, dy, options);
    EXPECT_LE(relativeError(actual.y, expected.y), tolerance) << "rows " << rows;
    EXPECT_LE(relativeError(actual.dx, expected.dx), tolerance) << "rows " << rows;
    for (const auto& [name, gradient] : expected.dparams)
      EXPECT_LE(relativeError(actual.dparams.at(name), gradient), tolerance) << name << " rows " << rows;
  }
}

std::vector<GpuCase> gpuCases() {
  std::vector<GpuCase> cases;
  for (const std::string& spec : kSmallStructures)
    for (Precision precision : {Precision::F32, Precision::BF16}) {
      cases.push_back({spec, precision});
      cases.push_back({withNorm(spec), precision});
    }
  cases.push_back({"btt(in=1024, out=1024, rank=4)", Precision::F32});
  cases.push_back({"monarch(in=1024, out=1024, blocks=32)", Precision::BF16});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Structures, CudaLayer, ::testing::ValuesIn(gpuCases()),
                         [](const ::testing::TestParamInfo<GpuCase>& info) {
                           std::string name;
                           for (char c : info.param.spec)
                             if (std::isalnum(static_cast<unsigned char>(c))) name += c;
                           return name + "_" + precisionName(info.param.precision) + "_" +
                                  std::to_string(info.index);
                         });

}  // namespace
}  // namespace einjit::cuda::testing
