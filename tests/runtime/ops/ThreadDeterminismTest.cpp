// Results of the ops (forward values and every gradient) are bit-identical with 1 and 2 threads.
// The thread pool reads EINJIT_THREADS once, at first use, so each thread count runs in a forked
// child that has not used the pool yet; this executable holds only this test, so the parent never
// starts the pool before forking.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "runtime/ops/Ops.h"
#include "tests/runtime/ops/OpsTestUtil.h"

namespace einjit::rt {
namespace {

using testing::randomTensor;

void appendBytes(std::string& out, const Tensor& tensor) {
  out.append(static_cast<const char*>(tensor.raw()), tensor.nbytes());
}

// Every op forward and backward in float32 on sizes that span several chunks; returns the bytes
// of every result and gradient.
std::string runWorkload() {
  std::mt19937_64 rng(42);
  const int64_t batch = 4, seq = 40, heads = 2, headDim = 32, width = heads * headDim;
  const int64_t rows = batch * seq * 4;  // 640 rows
  Var x = parameter(randomTensor({rows, width}, rng, 1.0, DType::F32), "x");
  Var gamma = parameter(randomTensor({width}, rng, 1.0, DType::F32), "gamma");
  Var beta = parameter(randomTensor({width}, rng, 1.0, DType::F32), "beta");
  Var bias = parameter(randomTensor({width}, rng, 1.0, DType::F32), "bias");
  Var table = parameter(randomTensor({300, width}, rng, 1.0, DType::F32), "table");
  Var head = parameter(randomTensor({rows, 97}, rng, 1.0, DType::F32), "head");
  std::vector<int32_t> ids, targets;
  for (int64_t r = 0; r < rows; ++r) {
    ids.push_back(static_cast<int32_t>((r * 7) % 300));
    targets.push_back(static_cast<int32_t>((r * 13) % 97));
  }
  Tape tape;
  Var e = add(tape, embedding(tape, ids, table), x);
  Var h = gelu(tape, addBias(tape, layerNorm(tape, e, gamma, beta), bias));
  Var r = relu(tape, scale(tape, h, 1.5), 1.2);
  Var qkv = reshape(tape, r, {rows / 4, width * 4});
  Var a = causalSelfAttention(tape, qkv, qkv, qkv, batch, seq, heads * 4, 0.3);
  Var mse = meanSquaredError(tape, reshape(tape, a, {rows, width}),
                             randomTensor({rows, width}, rng, 1.0, DType::F32));
  Var ce = crossEntropy(tape, head, targets);
  Var loss = add(tape, mse, ce);
  tape.backward(loss);
  std::string bytes;
  for (const Var& var : {e, h, r, a, mse, ce}) appendBytes(bytes, var->value);
  for (const Var& var : {x, gamma, beta, bias, table, head}) appendBytes(bytes, var->grad);
  return bytes;
}

// Runs the workload in a child process with EINJIT_THREADS = threads; returns its bytes.
std::string runWithThreads(int threads) {
  const std::string path = ::testing::TempDir() + "einjit_ops_threads_" + std::to_string(threads) +
                           "_" + std::to_string(getpid());
  const pid_t child = fork();
  if (child == 0) {
    setenv("EINJIT_THREADS", std::to_string(threads).c_str(), 1);
    try {
      std::ofstream(path, std::ios::binary) << runWorkload();
    } catch (...) {
      _exit(2);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "child with " << threads << " threads failed";
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(path.c_str());
  return bytes;
}

TEST(OpsThreads, OneAndTwoThreadsGiveIdenticalResults) {
  const std::string one = runWithThreads(1), two = runWithThreads(2);
  ASSERT_FALSE(one.empty());
  EXPECT_EQ(one.size(), two.size());
  EXPECT_TRUE(one == two) << "results differ between 1 and 2 threads";
  // And run to run with the same thread count.
  EXPECT_TRUE(runWithThreads(2) == two);
}

}  // namespace
}  // namespace einjit::rt
