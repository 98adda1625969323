// The einjit command line as a user meets it: exit codes, one-line errors with a caret for specs,
// --help on every subcommand, and no output file left behind by a failed command.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "runtime/io/Npy.h"
#include "tests/tools/RunEinjit.h"

namespace fs = std::filesystem;

namespace {

using Result = einjit::testing::CliResult;
using einjit::testing::readFile;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("einjit_cli_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs einjit with `args` (already shell-quoted) and captures status, stdout and stderr.
  Result einjit(const std::string& args, const std::string& environment = "") {
    return ::einjit::testing::runEinjit(dir_, args, environment);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void save(const std::string& name, const einjit::Tensor& t) { einjit::writeNpy(path(name), t); }

  fs::path dir_;
};

einjit::Tensor iota(einjit::DType dtype, einjit::Shape shape) {
  einjit::Tensor t(dtype, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.set(i, 0.25 * static_cast<double>(i % 7) - 0.5);
  return t;
}

int lineCount(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST_F(CliTest, HelpForEverySubcommand) {
  for (const char* sub : {"", "run", "inspect", "layer", "demo"}) {
    Result r = einjit(std::string(sub) + " --help");
    EXPECT_EQ(r.status, 0) << sub;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << sub;
  }
  Result layer = einjit("layer --help");
  for (const char* option : {"--params", "--seed", "--save-params", "--dy", "--dx", "--dparams", "--target"})
    EXPECT_NE(layer.out.find(option), std::string::npos) << option;
}

// The OpenBLAS baseline of `einjit bench` runs the kernels EINJIT_BENCH_OPENBLAS_CORETYPE names,
// and by default, on an AVX-512 CPU, AVX-512 kernels even when OPENBLAS_CORETYPE says Haswell
// (as this project's machines set it). The report's header names the core that ran.
TEST_F(CliTest, BenchBaselineRunsTheOpenblasKernelsItWasToldTo) {
  const std::string bench = "bench 'dense(in=32, out=32)' --rows 16 --no-torch";
  Result r = einjit(bench, "OPENBLAS_CORETYPE=SkylakeX EINJIT_BENCH_OPENBLAS_CORETYPE=Haswell");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("(core Haswell)"), std::string::npos) << r.out;
}

TEST_F(CliTest, BenchBaselineRunsAvx512KernelsOnAnAvx512Cpu) {
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512dq") || !__builtin_cpu_supports("avx512vl"))
    GTEST_SKIP() << "this CPU has no AVX-512";
  Result r = einjit("bench 'dense(in=32, out=32)' --rows 16 --no-torch", "OPENBLAS_CORETYPE=Haswell");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("(core SkylakeX)"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("restarting with OPENBLAS_CORETYPE=SkylakeX"), std::string::npos) << r.err;
}

TEST_F(CliTest, NoSubcommandIsAUserError) {
  Result r = einjit("");
  EXPECT_EQ(r.status, 1);
  Result bad = einjit("frobnicate");
  EXPECT_EQ(bad.status, 1);
}

TEST_F(CliTest, RunMatmulWritesFloat32AndFloat64ByTheDtypeRule) {
  save("a.npy", iota(einjit::DType::F32, {2, 3}));
  save("b.npy", iota(einjit::DType::F32, {3, 4}));
  save("b64.npy", iota(einjit::DType::F64, {3, 4}));
  Result r = einjit("run 'ij,jk->ik' " + path("a.npy") + " " + path("b.npy") + " -o " + path("c.npy") + " --target ref");
  ASSERT_EQ(r.status, 0) << r.err;
  einjit::Tensor c = einjit::readNpy(path("c.npy"));
  EXPECT_EQ(c.dtype(), einjit::DType::F32);
  ASSERT_EQ(c.shape(), (einjit::Shape{2, 4}));
  einjit::Tensor a = iota(einjit::DType::F64, {2, 3}), b = iota(einjit::DType::F64, {3, 4});
  for (int i = 0; i < 2; ++i)
    for (int k = 0; k < 4; ++k) {
      double expected = 0;
      for (int j = 0; j < 3; ++j) expected += a.get(i * 3 + j) * b.get(j * 4 + k);
      EXPECT_NEAR(c.get(i * 4 + k), expected, 1e-6);
    }
  r = einjit("run 'ij,jk' " + path("a.npy") + " " + path("b64.npy") + " -o " + path("c64.npy"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(einjit::readNpy(path("c64.npy")).dtype(), einjit::DType::F64);
}

TEST_F(CliTest, CpuTargetAgreesWithReference) {
  save("a.npy", iota(einjit::DType::F32, {3, 4}));
  save("b.npy", iota(einjit::DType::F32, {4, 5}));
  for (const char* target : {"cpu", "ref"}) {
    Result r = einjit(std::string("run 'ij,jk->ki' ") + path("a.npy") + " " + path("b.npy") + " -o " +
                      path(std::string(target) + ".npy") + " --target " + target);
    ASSERT_EQ(r.status, 0) << r.err;
  }
  einjit::Tensor cpu = einjit::readNpy(path("cpu.npy")), ref = einjit::readNpy(path("ref.npy"));
  ASSERT_EQ(cpu.shape(), (einjit::Shape{5, 3}));
  for (int64_t i = 0; i < cpu.numel(); ++i) EXPECT_NEAR(cpu.get(i), ref.get(i), 1e-5);
}

TEST_F(CliTest, CompileEmitsEveryStage) {
  const std::string spec = "'btt(in=64, out=64, rank=2)'";
  EXPECT_NE(einjit("compile " + spec + " --emit mlir").out.find("linalg.generic"), std::string::npos);
  EXPECT_NE(einjit("compile " + spec + " --emit mlir-tiled").out.find("scf.for"), std::string::npos);
  EXPECT_NE(einjit("compile " + spec + " --emit mlir-scheduled").out.find("vector.contract"), std::string::npos);
  EXPECT_NE(einjit("compile " + spec + " --emit mlir-lowered").out.find("llvm."), std::string::npos);
  EXPECT_NE(einjit("compile " + spec + " --emit llvm --backward").out.find("define"), std::string::npos);
  EXPECT_NE(einjit("compile 'ij,jk' --shapes 8x16,16x4 --emit asm").out.find("vfmadd"), std::string::npos);
  Result obj = einjit("compile " + spec + " --emit obj -o " + path("k.o"));
  ASSERT_EQ(obj.status, 0) << obj.err;
  EXPECT_EQ(readFile(path("k.o")).substr(0, 4), "\x7f" "ELF");
  EXPECT_EQ(einjit("compile " + spec + " --emit obj").status, 1);  // binary needs -o
  EXPECT_EQ(einjit("compile " + spec + " --emit wasm").status, 1);
}

TEST_F(CliTest, CudaTargetIsAClearErrorForNow) {
  save("a.npy", iota(einjit::DType::F32, {3, 3}));
  Result r = einjit("run ii " + path("a.npy") + " -o " + path("t.npy") + " --target cuda");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("cuda"), std::string::npos);
  EXPECT_FALSE(fs::exists(path("t.npy")));
}

TEST_F(CliTest, MalformedExpressionGetsCaretAndNoOutput) {
  save("a.npy", iota(einjit::DType::F32, {2, 3}));
  Result r = einjit("run 'ij,j%->i' " + path("a.npy") + " " + path("a.npy") + " -o " + path("o.npy"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("column 5"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("    ^"), std::string::npos) << r.err;  // two-space indent + 4 columns
  EXPECT_FALSE(fs::exists(path("o.npy")));
}

TEST_F(CliTest, ShapeMismatchAndOperandCountAreOneLineErrors) {
  save("a.npy", iota(einjit::DType::F32, {2, 3}));
  save("b.npy", iota(einjit::DType::F32, {4, 5}));
  Result r = einjit("run 'ij,jk->ik' " + path("a.npy") + " " + path("b.npy") + " -o " + path("o.npy"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("error"), std::string::npos);
  EXPECT_FALSE(fs::exists(path("o.npy")));
  r = einjit("run 'ij,jk->ik' " + path("a.npy") + " -o " + path("o.npy"));
  EXPECT_EQ(r.status, 1);
  EXPECT_FALSE(fs::exists(path("o.npy")));
}

TEST_F(CliTest, BadNpyFilesAreOneLineErrors) {
  { std::ofstream(path("junk.npy")) << "not a numpy file at all"; }
  Result r = einjit("run ii " + path("junk.npy") + " -o " + path("o.npy"));
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lineCount(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("junk.npy"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("o.npy")));
  r = einjit("run ii " + path("missing.npy") + " -o " + path("o.npy"));
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lineCount(r.err), 1) << r.err;
}

TEST_F(CliTest, InspectStructureTableAndJson) {
  Result r = einjit("inspect 'btt(in=1024, out=1024, rank=4)'");
  ASSERT_EQ(r.status, 0) << r.err;
  // structures.md: BTT params = MACs = r (m1 m0 n0 + n0 m1 n1) = 4 * (32^3 + 32^3).
  EXPECT_NE(r.out.find("262144"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("W0"), std::string::npos);
  EXPECT_NE(r.out.find("W1"), std::string::npos);
  Result j = einjit("inspect --json 'btt(in=1024, out=1024, rank=4)'");
  ASSERT_EQ(j.status, 0) << j.err;
  EXPECT_NE(j.out.find("\"macs_per_row\": 262144"), std::string::npos) << j.out;
}

TEST_F(CliTest, InspectClassicEinsumShowsThePlan) {
  Result r = einjit("inspect 'ab,bc,cd->ad' --shapes 10x100,100x5,5x50");
  ASSERT_EQ(r.status, 0) << r.err;
  // (AB)C: 10*100*5 + 10*5*50 = 7500 MACs, the optimum.
  EXPECT_NE(r.out.find("7500"), std::string::npos) << r.out;
  Result missing = einjit("inspect 'ab,bc->ac'");
  EXPECT_EQ(missing.status, 1);
}

TEST_F(CliTest, UnknownStructureSuggestsNearestName) {
  Result r = einjit("inspect 'bt(in=64, out=64, rank=2)'");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("btt"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("^"), std::string::npos) << r.err;
}

TEST_F(CliTest, LayerSeedSaveParamsThenReload) {
  save("x.npy", iota(einjit::DType::F32, {5, 64}));
  const std::string spec = "'btt(in=64, out=48, rank=2)'";
  Result r = einjit("layer " + spec + " -x " + path("x.npy") + " -o " + path("y1.npy") + " --seed 7 --save-params " + path("p.npz"));
  ASSERT_EQ(r.status, 0) << r.err;
  r = einjit("layer " + spec + " -x " + path("x.npy") + " -o " + path("y2.npy") + " --params " + path("p.npz"));
  ASSERT_EQ(r.status, 0) << r.err;
  einjit::Tensor y1 = einjit::readNpy(path("y1.npy")), y2 = einjit::readNpy(path("y2.npy"));
  ASSERT_EQ(y1.shape(), (einjit::Shape{5, 48}));
  for (int64_t i = 0; i < y1.numel(); ++i) EXPECT_EQ(y1.get(i), y2.get(i));
  auto params = einjit::readNpz(path("p.npz"));
  EXPECT_EQ(params.count("W0"), 1u);
  EXPECT_EQ(params.count("W1"), 1u);
}

TEST_F(CliTest, LayerOptionConflictsAndBadInputsLeaveNothing) {
  save("x.npy", iota(einjit::DType::F32, {5, 64}));
  save("xbad.npy", iota(einjit::DType::F32, {5, 63}));
  const std::string spec = "'lowrank(in=64, out=48, rank=3)'";
  const std::string out = " -o " + path("y.npy");
  EXPECT_EQ(einjit("layer " + spec + " -x " + path("x.npy") + out + " --params p.npz --seed 3").status, 1);
  EXPECT_EQ(einjit("layer " + spec + " -x " + path("x.npy") + out + " --dx " + path("dx.npy")).status, 1);
  Result wrongWidth = einjit("layer " + spec + " -x " + path("xbad.npy") + out + " --target ref");
  EXPECT_EQ(wrongWidth.status, 1);
  EXPECT_EQ(lineCount(wrongWidth.err), 1) << wrongWidth.err;
  Result noDir = einjit("layer " + spec + " -x " + path("x.npy") + " -o " + path("nodir/y.npy"));
  EXPECT_EQ(noDir.status, 1);
  EXPECT_FALSE(fs::exists(path("y.npy")));
  EXPECT_FALSE(fs::exists(path("dx.npy")));
}

TEST_F(CliTest, LayerSpecErrorsPointAtTheValue) {
  save("x.npy", iota(einjit::DType::F32, {2, 64}));
  Result r = einjit("layer 'btt(in=64, out=64, rank=abc)' -x " + path("x.npy") + " -o " + path("y.npy"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("column 25"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("y.npy")));
}

}  // namespace
