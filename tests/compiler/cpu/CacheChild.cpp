// A helper process for the concurrent-cache test: waits until the barrier file exists, then
// compiles the cache test program into the given cache directory and runs it once.
// Usage: einjit_cpu_cache_child CACHE_DIR BARRIER_FILE. Exit status 0 on success.
#include <chrono>
#include <filesystem>
#include <iostream>
#include <thread>
#include <vector>

#include "compiler/cpu/KernelCache.h"
#include "tests/compiler/cpu/CpuTestSupport.h"

int main(int argc, char** argv) {
  using namespace einjit;
  if (argc != 3) {
    std::cerr << "usage: einjit_cpu_cache_child CACHE_DIR BARRIER_FILE\n";
    return 2;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!std::filesystem::exists(argv[2])) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::cerr << "cache child: the barrier never opened\n";
      return 3;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  try {
    const KernelProgram program = cpu::test::cacheTestProgram();
    cpu::KernelCache cache;
    cpu::CompileStats stats;
    const auto kernel = cache.get(program, {argv[1], true}, &stats);
    // One call on zero inputs: the kernel must load and run.
    std::vector<Tensor> buffers;
    std::vector<const Tensor*> inputs;
    std::vector<Tensor*> outputs;
    for (ir::ValueId id : program.inputs)
      buffers.emplace_back(program.dtype, cpu::test::withRows(program.values[id].shape, 4));
    for (const Tensor& buffer : buffers) inputs.push_back(&buffer);
    Tensor y(program.dtype, cpu::test::withRows(program.values[program.outputs[0]].shape, 4));
    outputs.push_back(&y);
    cpu::runKernel(program, *kernel, 4, inputs, outputs);
    std::cout << "cache child: " << (stats.diskHit ? "disk hit" : "compiled") << " in "
              << stats.milliseconds << " ms\n";
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "cache child: " << error.what() << "\n";
    return 1;
  }
}
