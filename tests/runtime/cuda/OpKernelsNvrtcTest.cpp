// The op kernel source compiles with NVRTC for sm_90a (PTX and cubin), ptxas accepts the PTX
// for sm_90a, every kernel the launch wrappers use is in it for f32 and bf16, and the
// attention kernels' shared memory fits an H100 block for the largest head dimension. The
// cubin goes through the CUDA target's disk cache. Skips when NVRTC or ptxas is absent.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "compiler/cuda/Nvrtc.h"
#include "runtime/cuda/OpDevice.h"
#include "runtime/cuda/OpKernels.h"

namespace einjit::cuda::testing {
namespace {

constexpr const char* kArch = "sm_90a";
constexpr const char* kPtxas = "/usr/local/cuda/bin/ptxas";

void skipWithoutToolkit() {
  if (const std::string reason = nvrtcUnavailableReason(); !reason.empty())
    GTEST_SKIP() << "NVRTC not available: " << reason;
  if (!std::filesystem::exists(kPtxas)) GTEST_SKIP() << "ptxas not found at " << kPtxas;
}

const NvrtcOutput& compiled() {
  static const NvrtcOutput output = nvrtcCompile(opKernelSource(), "einjit_op_kernels.cu", kArch);
  return output;
}

TEST(OpKernelsNvrtc, CompilesForSm90aAndPtxasAcceptsIt) {
  skipWithoutToolkit();
  const NvrtcOutput& output = compiled();
  EXPECT_FALSE(output.cubin.empty());
  const std::string stem = (std::filesystem::temp_directory_path() /
                            ("einjit-op-kernels-" + std::to_string(::getpid()))).string();
  std::ofstream(stem + ".ptx") << output.ptx;
  const std::string command = std::string(kPtxas) + " -arch=" + kArch + " -v " + stem + ".ptx -o " + stem +
                              ".cubin > " + stem + ".log 2>&1";
  const int status = std::system(command.c_str());
  std::ifstream in(stem + ".log");
  const std::string log((std::istreambuf_iterator<char>(in)), {});
  for (const char* ext : {".ptx", ".cubin", ".log"}) std::filesystem::remove(stem + ext);
  ASSERT_EQ(status, 0) << log;
  // Spills stay small: the attention forward keeps 16 logits and up to 32 output columns per
  // thread in registers and ptxas spills a few of them (48 bytes, to L1) at 2 blocks per SM;
  // anything beyond a few registers would mean a per-thread array went to local memory.
  std::size_t kernels = 0;
  for (std::size_t at = log.find(" bytes spill stores"); at != std::string::npos;
       at = log.find(" bytes spill stores", at + 1), ++kernels) {
    const std::size_t start = log.rfind(' ', at - 1) + 1;
    EXPECT_LE(std::stoll(log.substr(start, at - start)), 64) << log.substr(log.rfind("Function", at), 120);
  }
  EXPECT_EQ(kernels, 58u) << "every kernel is reported";
}

TEST(OpKernelsNvrtc, EveryLaunchedKernelIsThere) {
  skipWithoutToolkit();
  const std::string& ptx = compiled().ptx;
  for (const char* op : {"add", "scale", "add_bias", "gelu", "gelu_backward", "relu", "relu_backward",
                         "column_partials", "column_finish", "embedding", "embedding_backward", "layer_norm",
                         "layer_norm_backward", "layer_norm_param_partials", "cross_entropy",
                         "cross_entropy_backward", "attention", "attention_row_dot", "attention_key_grad",
                         "attention_query_grad", "adamw_square_partials", "adamw_update", "mse", "mse_backward", "weight_norm_stats",
                         "weight_norm_apply", "weight_norm_backward"})
    for (const char* tag : {"_f32", "_bf16"}) {
      const std::string entry = ".entry einjit_" + std::string(op) + tag + "(";
      EXPECT_NE(ptx.find(entry), std::string::npos) << entry;
    }
  for (const char* kernel : {"einjit_convert_f32_to_bf16", "einjit_convert_bf16_to_f32", "einjit_cross_entropy_mean",
                             "einjit_adamw_finish_norm"})
    EXPECT_NE(ptx.find(".entry " + std::string(kernel) + "("), std::string::npos) << kernel;
}

TEST(OpKernelsNvrtc, AttentionSharedMemoryFitsAnH100Block) {
  constexpr int64_t kH100OptIn = 227 * 1024;
  EXPECT_LE(attentionForwardSharedBytes(kMaxHeadDim), kH100OptIn);
  EXPECT_LE(attentionKeyGradSharedBytes(kMaxHeadDim), kH100OptIn);
  EXPECT_LE(attentionQueryGradSharedBytes(kMaxHeadDim), kH100OptIn);
}

TEST(OpKernelsNvrtc, CubinIsCachedOnDisk) {
  skipWithoutToolkit();
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("einjit-op-cache-" + std::to_string(::getpid()));
  cpu::CacheOptions cache;
  cache.directory = dir.string();
  const std::string first = opKernelCubin(kArch, cache);
  std::size_t entries = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) entries += entry.is_regular_file();
  EXPECT_EQ(entries, 1u);
  EXPECT_EQ(opKernelCubin(kArch, cache), first);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace einjit::cuda::testing
