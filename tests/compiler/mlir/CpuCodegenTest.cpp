// The CPU code generator end to end: kernel programs (built by hand, and the kernels of real
// layers) compiled to objects, loaded, called, and compared with the reference interpreter of
// kernel programs; the text of every stage; the loader's checks.
#include "compiler/mlir/CpuCodegen.h"
#include "compiler/mlir/KernelScratch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <thread>

#include "einjit/error.h"
#include "frontend/structures/Structures.h"
#include "runtime/reference/ReferenceKernelProgram.h"

namespace einjit::cpu {
namespace {

constexpr int64_t N = ir::kRows;

// Builds a KernelProgram value by value, op by op.
class ProgramBuilder {
 public:
  ProgramBuilder(const std::string& name, DType dtype) {
    program.name = name;
    program.dtype = dtype;
  }

  ir::ValueId input(const std::string& name, const Shape& shape) {
    const ir::ValueId id = value(name, shape);
    program.inputs.push_back(id);
    return id;
  }
  ir::ValueId contract(const std::string& name, const std::string& equation,
                       const std::vector<ir::ValueId>& inputs, const Shape& shape) {
    ir::Op op;
    op.kind = ir::OpKind::Contract;
    op.equation = equation;
    op.inputs = inputs;
    return add(op, name, shape);
  }
  ir::ValueId reshape(const std::string& name, ir::ValueId in, const Shape& shape) {
    ir::Op op;
    op.kind = ir::OpKind::Reshape;
    op.inputs = {in};
    op.shape = shape;
    return add(op, name, shape);
  }
  ir::ValueId permute(const std::string& name, ir::ValueId in, const std::vector<int>& perm) {
    ir::Op op;
    op.kind = ir::OpKind::Permute;
    op.inputs = {in};
    op.perm = perm;
    Shape shape;
    for (int axis : perm) shape.push_back(program.values[in].shape[axis]);
    return add(op, name, shape);
  }
  ir::ValueId resize(ir::OpKind kind, const std::string& name, ir::ValueId in, int axis, int64_t size) {
    ir::Op op;
    op.kind = kind;
    op.inputs = {in};
    op.axis = axis;
    op.size = size;
    Shape shape = program.values[in].shape;
    shape[axis] = size;
    return add(op, name, shape);
  }
  ir::ValueId sum(const std::string& name, ir::ValueId a, ir::ValueId b) {
    ir::Op op;
    op.kind = ir::OpKind::Add;
    op.inputs = {a, b};
    return add(op, name, program.values[a].shape);
  }
  void output(ir::ValueId id) { program.outputs.push_back(id); }

  KernelProgram program;

 private:
  ir::ValueId value(const std::string& name, const Shape& shape) {
    program.values.push_back(ir::Value{name, shape});
    return static_cast<ir::ValueId>(program.values.size() - 1);
  }
  ir::ValueId add(ir::Op op, const std::string& name, const Shape& shape) {
    op.result = value(name, shape);
    program.ops.push_back(op);
    return op.result;
  }
};

Shape withRows(Shape shape, int64_t rows) {
  for (int64_t& extent : shape)
    if (extent == N) extent = rows;
  return shape;
}

Tensor randomTensor(DType dtype, const Shape& shape, uint64_t seed) {
  Tensor tensor(dtype, shape);
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, uniform(engine));
  return tensor;
}

// Every element within rel * max|expected| (at least rel) of the expected one.
void expectClose(const Tensor& actual, const Tensor& expected, double rel, const std::string& what) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  double largest = 1.0;
  for (int64_t i = 0; i < expected.numel(); ++i) largest = std::max(largest, std::fabs(expected.get(i)));
  int64_t bad = 0;
  for (int64_t i = 0; i < actual.numel(); ++i) {
    const double error = std::fabs(actual.get(i) - expected.get(i));
    if (!(error <= rel * largest) && bad++ < 5)
      ADD_FAILURE() << what << ": element " << i << " is " << actual.get(i) << ", expected "
                    << expected.get(i);
  }
  EXPECT_EQ(bad, 0) << what;
}

// Compiles `program` once, then for every row count runs it on random inputs (outputs start as
// NaN, so anything not written shows) and compares with referenceRunKernel.
void expectMatchesReference(const KernelProgram& program, const std::vector<int64_t>& rowCounts) {
  const std::unique_ptr<LoadedKernel> kernel = loadObject(compileToObject(program), program);
  const double rel = program.dtype == DType::F32 ? 1e-4 : 1e-11;
  for (int64_t rows : rowCounts) {
    std::vector<Tensor> inputs, outputs;
    std::vector<void*> buffers;
    for (std::size_t i = 0; i < program.inputs.size(); ++i)
      inputs.push_back(randomTensor(program.dtype, withRows(program.values[program.inputs[i]].shape, rows),
                                    1000 * static_cast<uint64_t>(rows) + i));
    for (ir::ValueId id : program.outputs) {
      outputs.emplace_back(program.dtype, withRows(program.values[id].shape, rows));
      for (int64_t e = 0; e < outputs.back().numel(); ++e)
        outputs.back().set(e, std::numeric_limits<double>::quiet_NaN());
    }
    for (Tensor& tensor : inputs) buffers.push_back(tensor.raw());
    for (Tensor& tensor : outputs) buffers.push_back(tensor.raw());
    kernel->call(rows, buffers);

    std::vector<const Tensor*> inputPointers;
    for (const Tensor& tensor : inputs) inputPointers.push_back(&tensor);
    const std::vector<Tensor> expected = referenceRunKernel(program, rows, inputPointers);
    ASSERT_EQ(expected.size(), outputs.size());
    for (std::size_t k = 0; k < outputs.size(); ++k)
      expectClose(outputs[k], expected[k], rel,
                  program.name + " output " + std::to_string(k) + " rows " + std::to_string(rows));
  }
}

const std::vector<int64_t> kRowCounts = {0, 1, 7, 64};

KernelProgram matmul(DType dtype, int64_t in, int64_t out) {
  ProgramBuilder b("matmul", dtype);
  const auto x = b.input("x", {N, in});
  const auto w = b.input("W", {in, out});
  b.output(b.contract("y", "zi,io->zo", {x, w}, {N, out}));
  return b.program;
}

// btt(in = m1*m0, out = n0*n1, rank r) forward, as docs/layouts.md writes it.
KernelProgram bttForward(DType dtype, int64_t m, int64_t n, int64_t r) {
  ProgramBuilder b("btt_forward", dtype);
  const auto x = b.input("x", {N, m * m});
  const auto w0 = b.input("W0", {m, m, n, r});
  const auto w1 = b.input("W1", {n, m, r, n});
  const auto xv = b.reshape("x_view", x, {N, m, m});
  const auto z = b.contract("Z", "zab,abcr->zacr", {xv, w0}, {N, m, n, r});
  const auto y3 = b.contract("y_view", "zacr,card->zcd", {z, w1}, {N, n, n});
  b.output(b.reshape("y", y3, {N, n * n}));
  return b.program;
}

TEST(CpuCodegen, MatmulF32) { expectMatchesReference(matmul(DType::F32, 64, 48), kRowCounts); }
TEST(CpuCodegen, MatmulF64) { expectMatchesReference(matmul(DType::F64, 64, 48), kRowCounts); }
TEST(CpuCodegen, MatmulOddSizes) { expectMatchesReference(matmul(DType::F32, 13, 7), kRowCounts); }
TEST(CpuCodegen, MatmulLarge) { expectMatchesReference(matmul(DType::F32, 1024, 1024), {1, 300}); }

// Register tiles prefetch output tiles for writing: those that accumulate into their output
// (here: a reduction of 1024, cut into blocks) the next iteration's tile, in a block entered
// only when there is one; those starting from zeros their own (a reduction of 64). The results
// stay exact at row counts that end on a full, a partial and a single-row tile.
TEST(CpuCodegenStages, OutputTilesArePrefetchedWithoutChangingResults) {
  for (const KernelProgram& program : {matmul(DType::F32, 1024, 64), matmul(DType::F32, 64, 64)}) {
    EXPECT_NE(emitStage(program, EmitStage::Llvm).find("call void @llvm.prefetch"), std::string::npos)
        << program.name;
    expectMatchesReference(program, {1, 8, 9, 300});
  }
}

// The weight is read along its rows (V is not its last dim), so the kernel packs it first.
TEST(CpuCodegen, TransposedWeight) {
  for (DType dtype : {DType::F32, DType::F64}) {
    ProgramBuilder b("transposed", dtype);
    const auto dy = b.input("dy", {N, 48});
    const auto w = b.input("W", {64, 48});
    b.output(b.contract("dx", "zo,io->zi", {dy, w}, {N, 64}));
    expectMatchesReference(b.program, {0, 1, 7, 64, 300});
  }
}

// The weights are read along contiguous rows wider than a register tile's panel (the V tile),
// so the kernel packs them into panels first.
TEST(CpuCodegen, WeightRowsWiderThanAPanel) {
  expectMatchesReference(matmul(DType::F32, 40, 96), {0, 1, 7, 64, 300});
  expectMatchesReference(matmul(DType::F64, 40, 96), {0, 1, 7, 64, 300});
  expectMatchesReference(bttForward(DType::F32, 8, 64, 2), {0, 1, 9, 300});
}

TEST(CpuCodegen, BatchedContractionWithPermutedOutput) {
  for (DType dtype : {DType::F32, DType::F64}) {
    ProgramBuilder b("batched", dtype);
    const auto x = b.input("x", {N, 3, 5, 6});
    const auto w = b.input("W", {3, 6, 4});
    b.output(b.contract("y", "zbij,bjk->zkbi", {x, w}, {N, 4, 3, 5}));
    expectMatchesReference(b.program, kRowCounts);
  }
}

// The innermost output dim l indexes both operands (Monarch's second block-diagonal), so the
// kernel computes along s (packed into panels, or contiguous in W) and transposes the result.
TEST(CpuCodegen, BatchDimInnermostInTheOutput) {
  for (DType dtype : {DType::F32, DType::F64}) {
    for (int64_t s : {int64_t{64}, int64_t{7}}) {
      ProgramBuilder b("batch_innermost", dtype);
      const auto x = b.input("x", {N, 5, 3});
      const auto w = b.input("W", {3, s, 5});
      b.output(b.contract("y", "zrl,lsr->zsl", {x, w}, {N, s, 3}));
      expectMatchesReference(b.program, {0, 1, 7, 64, 300});
      ProgramBuilder t("batch_innermost_contiguous", dtype);
      const auto xt = t.input("x", {N, 5, 3});
      const auto wt = t.input("W", {3, 5, s});
      t.output(t.contract("y", "zrl,lrs->zsl", {xt, wt}, {N, s, 3}));
      expectMatchesReference(t.program, {0, 1, 7, 64, 300});
      // Moving s last here is an order that is not its own inverse.
      ProgramBuilder u("batch_innermost_4d", dtype);
      const auto xu = u.input("x", {N, 5, 3, 2});
      const auto wu = u.input("W", {3, s, 5, 2});
      u.output(u.contract("y", "zrlt,lsrt->zstl", {xu, wu}, {N, s, 2, 3}));
      expectMatchesReference(u.program, {0, 1, 7, 64, 300});
    }
  }
}

TEST(CpuCodegen, Monarch1024ForwardAndBackward) {
  const ir::LayerProgram layer = buildLayer("monarch(in=1024, out=1024, blocks=32)");
  expectMatchesReference(forwardKernel(layer, DType::F32), {1, 7, 100});
  expectMatchesReference(backwardKernel(layer, DType::F32), {1, 7, 100});
}

TEST(CpuCodegen, DiagonalAndTrace) {
  ProgramBuilder b("diagonal", DType::F32);
  const auto x = b.input("x", {N, 5, 5});
  const auto m = b.input("M", {4, 4});
  b.output(b.contract("diag", "zii->zi", {x}, {N, 5}));
  b.output(b.contract("trace", "zii->z", {x}, {N}));
  b.output(b.contract("trace_m", "ii->", {m}, {}));
  b.output(b.contract("diag_product", "zii,ij->zj", {x, b.input("W", {5, 3})}, {N, 3}));
  expectMatchesReference(b.program, kRowCounts);
}

TEST(CpuCodegen, BroadcastSizeOneDims) {
  ProgramBuilder b("broadcast", DType::F32);
  const auto x = b.input("x", {N, 4, 8});
  const auto w = b.input("W", {1, 8});
  const auto v = b.input("v", {1, 4});
  b.output(b.contract("scaled", "zab,ab->zab", {x, w}, {N, 4, 8}));
  b.output(b.contract("sum_rows", "za,za->a", {b.input("y", {N, 4}), v}, {4}));
  expectMatchesReference(b.program, kRowCounts);
}

TEST(CpuCodegen, ReshapePermutePadTruncateAdd) {
  for (DType dtype : {DType::F32, DType::F64}) {
    ProgramBuilder b("views", dtype);
    const auto x = b.input("x", {N, 12});
    const auto w = b.input("W", {5, 5});
    const auto t = b.reshape("t", x, {N, 3, 4});
    const auto p = b.permute("p", t, {0, 2, 1});                            // (N, 4, 3)
    const auto padded = b.resize(ir::OpKind::Pad, "padded", p, 2, 5);       // (N, 4, 5)
    const auto cut = b.resize(ir::OpKind::Truncate, "cut", padded, 1, 3);  // (N, 3, 5)
    const auto mixed = b.contract("mixed", "zab,bc->zac", {cut, w}, {N, 3, 5});
    const auto total = b.sum("total", cut, mixed);
    b.output(b.reshape("y", total, {N, 15}));
    b.output(b.permute("wt", w, {1, 0}));
    expectMatchesReference(b.program, kRowCounts);
  }
}

// Transposes run as tiles moving vectors: blocks of up to one vector's lanes squared between
// the two innermost dims (exact 16 x 16 blocks, several, awkward sizes), contiguous runs when
// the innermost dim stays innermost, and size-1 dims leading, between and trailing (dropped
// first). In the row loop and on parameters alone.
TEST(CpuCodegen, TransposesOfEveryShape) {
  struct Case {
    Shape shape;
    std::vector<int> perm;
  };
  const std::vector<Case> cases = {
      {{N, 16, 16}, {0, 2, 1}},
      {{N, 48, 32}, {0, 2, 1}},
      {{N, 7, 5}, {0, 2, 1}},
      {{N, 3, 16, 1, 8}, {0, 4, 1, 3, 2}},
      {{N, 1, 20, 1, 12, 1}, {0, 4, 3, 2, 5, 1}},
      {{N, 4, 6, 24}, {0, 2, 1, 3}},
      {{N, 5, 1}, {0, 2, 1}},
      {{N, 1, 1}, {0, 2, 1}},
      {{33, 1, 17}, {2, 1, 0}},
      {{2, 32, 16, 1}, {0, 3, 2, 1}},
  };
  for (DType dtype : {DType::F32, DType::F64}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(shapeToString(c.shape));
      ProgramBuilder b("transpose", dtype);
      const auto x = b.input("x", c.shape);
      b.output(b.permute("t", x, c.perm));
      if (c.shape[0] != N) b.output(b.contract("rows", "za->za", {b.input("y", {N, 3})}, {N, 3}));
      expectMatchesReference(b.program, {0, 1, 7, 64, 300});
    }
  }
}

TEST(CpuCodegen, BttForwardSmall) {
  expectMatchesReference(bttForward(DType::F32, 4, 4, 2), kRowCounts);
  expectMatchesReference(bttForward(DType::F64, 4, 4, 2), kRowCounts);
}

TEST(CpuCodegen, BttForward1024) { expectMatchesReference(bttForward(DType::F32, 32, 32, 4), {1, 7, 100}); }

TEST(CpuCodegen, SumOverRowsAccumulatesAcrossRowTiles) {
  for (DType dtype : {DType::F32, DType::F64}) {
    ProgramBuilder b("weight_gradient", dtype);
    const auto x = b.input("x", {N, 6});
    const auto dy = b.input("dy", {N, 40});
    const auto dw = b.contract("dW", "zi,zo->io", {x, dy}, {6, 40});
    b.output(dw);
    b.output(b.sum("dW_twice", dw, dw));
    expectMatchesReference(b.program, {0, 1, 7, 64, 600});
  }
}

// Sums over the rows (parameter gradients) run as GEMMs with the rows as K on panels packed per
// row tile: M and N dims of sizes that split into whole register tiles and sizes that do not,
// batch dims (in both operands) outermost and innermost, the split dim contiguous in its
// operand or not, a declared output order the packed sum must be transposed back into.
TEST(CpuCodegen, SumsOverTheRowsRunAsPackedGemms) {
  struct Case {
    const char* equation;
    Shape a, b, result;
  };
  const std::vector<Case> cases = {
      {"zab,zacr->abcr", {N, 4, 8}, {N, 4, 5, 3}, {4, 8, 5, 3}},       // BTT dW0, batch a
      {"zab,zacr->abcr", {N, 2, 64}, {N, 2, 32, 2}, {2, 64, 32, 2}},
      {"zacr,zcd->card", {N, 6, 3, 4}, {N, 3, 64}, {3, 6, 4, 64}},     // BTT dW1, a split strided
      {"zrl,zsl->lsr", {N, 16, 3}, {N, 40, 3}, {3, 40, 16}},           // Monarch dW2, batch innermost
      {"zi,zo->oi", {N, 24}, {N, 64}, {64, 24}},
      {"zi,zo->io", {N, 13}, {N, 7}, {13, 7}},
      {"zi,zo->io", {N, 1}, {N, 5}, {1, 5}},
  };
  for (DType dtype : {DType::F32, DType::F64}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(c.equation);
      ProgramBuilder b("row_sum", dtype);
      const auto a = b.input("A", c.a);
      const auto other = b.input("B", c.b);
      b.output(b.contract("dW", c.equation, {a, other}, c.result));
      expectMatchesReference(b.program, {0, 1, 7, 64, 300});
    }
  }
}

// Sums over the rows that the GEMM form does not take stay plain loops: no dim of one operand's
// own, a reduction besides the rows, a diagonal.
TEST(CpuCodegen, OtherSumsOverTheRows) {
  ProgramBuilder b("other_row_sums", DType::F32);
  const auto x = b.input("x", {N, 4, 6});
  const auto y = b.input("y", {N, 4, 6});
  const auto w = b.input("w", {N, 6, 5});
  b.output(b.contract("elementwise", "zab,zab->ab", {x, y}, {4, 6}));
  b.output(b.contract("two_reductions", "zab,zbc->ac", {x, w}, {4, 5}));
  b.output(b.contract("diagonal", "zaa,zab->ab", {b.input("s", {N, 4, 4}), x}, {4, 6}));
  expectMatchesReference(b.program, {0, 1, 7, 64, 300});
}

// The innermost output dim r is shorter than a vector (BTT's rank in the input gradient), so
// the kernel computes along a (packed into panels of two vectors, or of one when only that
// divides a) and transposes the result; with a of a size that does not split into panels it
// keeps the declared order.
TEST(CpuCodegen, ShortInnermostOutputDim) {
  for (DType dtype : {DType::F32, DType::F64}) {
    for (int64_t a : {int64_t{64}, int64_t{16}, int64_t{48}, int64_t{7}}) {
      for (int64_t r : {int64_t{1}, int64_t{4}}) {
        ProgramBuilder b("short_innermost", dtype);
        const auto dz = b.input("dz", {N, 3, 5});
        const auto w = b.input("W", {3, a, r, 5});
        b.output(b.contract("dt", "zcd,card->zacr", {dz, w}, {N, a, 3, r}));
        expectMatchesReference(b.program, {0, 1, 7, 64, 300});
      }
    }
  }
}

TEST(CpuCodegen, BttBackward1024) {
  for (int64_t rank : {1, 4}) {
    const ir::LayerProgram layer = buildLayer("btt(in=1024, out=1024, rank=" + std::to_string(rank) + ")");
    expectMatchesReference(backwardKernel(layer, DType::F32), {1, 7, 100});
  }
}

// Factors that no whole or half vector register divides (34 = 2 x 17, 44 = 4 x 11), or that
// only quarter registers divide (60 = 4 x 15 on AVX2): the schedule splits their vector dim
// into whole registers and a rest, forward and backward.
TEST(CpuCodegen, FactorsNoVectorDivides) {
  for (const char* spec : {"btt(in=1088, out=1088, rank=1)", "btt(in=1056, out=1056, rank=2)",
                           "monarch(in=240, out=240, blocks=4)"}) {
    SCOPED_TRACE(spec);
    const ir::LayerProgram layer = buildLayer(spec);
    expectMatchesReference(forwardKernel(layer, DType::F32), {1, 7, 100});
    expectMatchesReference(backwardKernel(layer, DType::F32), {1, 7, 100});
  }
}

TEST(CpuCodegen, StaticEinsumWithoutRows) {
  ProgramBuilder b("einsum", DType::F64);
  const auto a = b.input("A", {7, 9});
  const auto c = b.input("B", {9, 33});
  const auto ab = b.contract("AB", "ij,jk->ik", {a, c}, {7, 33});
  b.output(b.contract("ABt", "ik,lk->il", {ab, b.input("C", {5, 33})}, {7, 5}));
  expectMatchesReference(b.program, {0, 3});
}

TEST(CpuCodegen, KernelsOfEveryStructure) {
  for (const char* spec : {"dense(in=8, out=6)", "lowrank(in=12, out=20, rank=3)", "kron(in=12, out=20)",
                           "tt(in=12, out=20, rank=2, cores=3)", "monarch(in=16, out=20, blocks=4)",
                           "btt(in=12, out=20, rank=2)", "btt(in=24, out=30, rank=2, cores=3)",
                           "dense(in=8, out=6, norm=true)"}) {
    SCOPED_TRACE(spec);
    const ir::LayerProgram layer = buildLayer(spec);
    for (DType dtype : {DType::F32, DType::F64}) {
      expectMatchesReference(forwardKernel(layer, dtype), kRowCounts);
      expectMatchesReference(backwardKernel(layer, dtype), kRowCounts);
    }
  }
}

// Programs whose intermediates are laid out for their readers (what the code generator does
// where row tiles spill, orderIntermediatesForReaders) compile to the same results, for every
// structure and for BTT rank 4 at d = 1024, whose t then is made in its reader's order.
TEST(CpuCodegen, IntermediatesLaidOutForTheirReaders) {
  for (const char* spec : {"lowrank(in=12, out=20, rank=3)", "kron(in=12, out=20)",
                           "tt(in=12, out=20, rank=2, cores=3)", "monarch(in=16, out=20, blocks=4)",
                           "btt(in=12, out=20, rank=2)",
                           "btt(in=24, out=30, rank=2, cores=3)", "btt(in=1024, out=1024, rank=4)"}) {
    SCOPED_TRACE(spec);
    const ir::LayerProgram layer = buildLayer(spec);
    expectMatchesReference(orderIntermediatesForReaders(forwardKernel(layer, DType::F32)), {1, 7, 100});
    expectMatchesReference(orderIntermediatesForReaders(backwardKernel(layer, DType::F32)), {1, 7, 100});
  }
}

// The backend compiles on several threads at once: every compilation has its own state.
TEST(CpuCodegen, CompilesOnSeveralThreadsAtOnce) {
  std::vector<KernelProgram> programs = {matmul(DType::F32, 64, 48), bttForward(DType::F64, 4, 4, 2),
                                         matmul(DType::F64, 13, 7), bttForward(DType::F32, 8, 8, 2)};
  std::vector<std::string> objects(programs.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < programs.size(); ++i)
    threads.emplace_back([&, i] { objects[i] = compileToObject(programs[i]); });
  for (std::thread& thread : threads) thread.join();
  for (std::size_t i = 0; i < programs.size(); ++i) {
    EXPECT_EQ(objects[i], compileToObject(programs[i])) << programs[i].name;
    expectMatchesReference(programs[i], {0, 9});
  }
}

// --- stages -------------------------------------------------------------------------------------

bool hostHasAvx512() { return codegenIdentity().find("+avx512f") != std::string::npos; }

bool hasLineWith(const std::string& text, const std::string& a, const std::string& b) {
  for (std::size_t start = 0; start < text.size();) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    const std::string line = text.substr(start, end - start);
    if (line.find(a) != std::string::npos && line.find(b) != std::string::npos) return true;
    start = end + 1;
  }
  return false;
}

TEST(CpuCodegenStages, EveryStageShowsItsForm) {
  const KernelProgram program = bttForward(DType::F32, 8, 8, 2);
  const std::string mlir = emitStage(program, EmitStage::Mlir);
  EXPECT_NE(mlir.find("linalg.generic"), std::string::npos);
  EXPECT_NE(mlir.find("\"reduction\""), std::string::npos);
  EXPECT_NE(mlir.find("tensor<?x8x8xf32>"), std::string::npos);
  EXPECT_NE(mlir.find("\"Z\""), std::string::npos) << "values keep their names as locations";

  const std::string tiled = emitStage(program, EmitStage::TiledMlir);
  EXPECT_NE(tiled.find("scf.for"), std::string::npos) << "row tiles";
  EXPECT_EQ(tiled.find("tensor<?x8x8xf32>, tensor"), std::string::npos) << "static shapes inside the tiles";
  EXPECT_EQ(tiled.find("vector."), std::string::npos);
  const std::string scheduled = emitStage(program, EmitStage::ScheduledMlir);
  EXPECT_NE(scheduled.find("vector.contract"), std::string::npos);
  EXPECT_EQ(scheduled.find("llvm."), std::string::npos);

  const std::string lowered = emitStage(program, EmitStage::LoweredMlir);
  EXPECT_NE(lowered.find("llvm.func @einjit_body"), std::string::npos);
  EXPECT_EQ(lowered.find("linalg."), std::string::npos);
  EXPECT_NE(lowered.find("llvm.intr.fmuladd"), std::string::npos);

  const std::string llvmIr = emitStage(program, EmitStage::Llvm);
  EXPECT_NE(llvmIr.find("define void @einjit_kernel(ptr"), std::string::npos);

  const std::string assembly = emitStage(program, EmitStage::Asm);
  EXPECT_NE(assembly.find("einjit_kernel:"), std::string::npos);
  EXPECT_TRUE(hasLineWith(assembly, "vfmadd", hostHasAvx512() ? "%zmm" : "%ymm"));

  const std::string object = emitStage(program, EmitStage::Obj);
  EXPECT_EQ(object.substr(0, 4), "\x7f" "ELF");
  EXPECT_EQ(object, compileToObject(program)) << "compilation is deterministic";
}

TEST(CpuCodegenStages, MatmulInnerLoopIsRegisterBlockedFma) {
  const std::string assembly = emitStage(matmul(DType::F32, 1024, 1024), EmitStage::Asm);
  const std::string fma = hostHasAvx512() ? "vfmadd231ps\t%zmm" : "vfmadd231ps\t%ymm";
  // A register tile of 8 rows x 2 vectors: 16 FMAs into accumulators with nothing stored between.
  const auto first = assembly.find(fma);
  ASSERT_NE(first, std::string::npos);
  const std::string block = assembly.substr(first, 2000);
  int fmas = 0;
  for (std::size_t at = block.find(fma); at != std::string::npos; at = block.find(fma, at + 1)) ++fmas;
  EXPECT_GE(fmas, 16);
}

// A sum over the rows runs as register tiles of FMAs whichever operand supplies the tile's
// rows: BTT's dW0 at d = 1024 takes them from its second operand (the outer-product lowering
// once handled only the first, and transposed the accumulators on every step otherwise).
TEST(CpuCodegenStages, RowSumGemmIsRegisterBlockedForEitherOperandOrder) {
  for (bool swapped : {false, true}) {
    ProgramBuilder b("row_sum_order", DType::F32);
    const auto x = b.input("x", {N, 32, 32});
    const auto dt = b.input("dt", {N, 32, 16, 1});
    b.output(swapped ? b.contract("dW0", "zacr,zab->abcr", {dt, x}, {32, 32, 16, 1})
                     : b.contract("dW0", "zab,zacr->abcr", {x, dt}, {32, 32, 16, 1}));
    const std::string assembly = emitStage(b.program, EmitStage::Asm);
    const std::string fma = hostHasAvx512() ? "vfmadd231ps\t%zmm" : "vfmadd231ps\t%ymm";
    // The densest 48 lines: a register tile is 16 FMAs on full vectors with one broadcast per
    // row and the loads between them; the transposing fallback had 1 FMA in ~10 shuffles.
    std::vector<bool> isFma;
    for (std::size_t at = 0; at < assembly.size();) {
      const std::size_t end = std::min(assembly.find('\n', at), assembly.size());
      isFma.push_back(assembly.substr(at, end - at).find(fma) != std::string::npos);
      at = end + 1;
    }
    constexpr std::size_t kWindow = 48;
    int densest = 0;
    for (std::size_t first = 0; first < isFma.size(); ++first) {
      const auto last = isFma.begin() + static_cast<std::ptrdiff_t>(std::min(first + kWindow, isFma.size()));
      densest = std::max(densest, static_cast<int>(std::count(isFma.begin() + static_cast<std::ptrdiff_t>(first), last, true)));
    }
    EXPECT_GE(densest, 16) << (swapped ? "rows from the first operand" : "rows from the second operand");
  }
}

// A row tile's result is computed where it goes: its register tiles start from zeros in
// registers (no memset of a fresh buffer) and write straight into the output, also when the
// result reaches the output through a reshape (no buffer, no copy). Both used to cost a tenth
// of a BTT layer.
TEST(CpuCodegenStages, RowTileResultsNeedNoBufferZerosOrCopies) {
  ProgramBuilder b("reshaped_result", DType::F32);
  const auto x = b.input("x", {N, 32 * 32});
  const auto w = b.input("W", {32, 48});
  const auto y3 = b.contract("y_view", "zab,bc->zac", {b.reshape("x_view", x, {N, 32, 32}), w}, {N, 32, 48});
  b.output(b.reshape("y", y3, {N, 32 * 48}));
  for (const KernelProgram& program : {matmul(DType::F32, 64, 48), b.program}) {
    const std::string llvmIr = emitStage(program, EmitStage::Llvm);
    // One allocation: W packed into panels once per call (the row tiles used to add one each).
    // (Allocations call the kernel scratch allocator, KernelScratch.h, not malloc.)
    const std::string allocCall = std::string("@") + cpu::detail::kScratchAllocSymbol + "(";
    int allocations = 0;
    for (std::size_t at = llvmIr.find("call"); at != std::string::npos; at = llvmIr.find("call", at + 1))
      allocations += llvmIr.compare(llvmIr.find_first_of("@\n", at), allocCall.size(), allocCall) == 0 ? 1 : 0;
    EXPECT_EQ(llvmIr.find("@malloc("), std::string::npos) << program.name;
    EXPECT_EQ(allocations, 1) << program.name;
    EXPECT_EQ(llvmIr.find("memset"), std::string::npos) << program.name;
    expectMatchesReference(program, {1, 9, 100});
  }
}

// A training forward's saved intermediate is both an output and the next contraction's operand:
// its row tiles are still computed straight into the output, which the next contraction then
// reads. Copied out instead, the copy of BTT rank 4's (rows, 32, 32, 4) tiles became scalar
// moves (144 vmovss at d = 1024) and made the forward 70% slower.
TEST(CpuCodegenStages, SavedIntermediatesAreComputedInPlace) {
  const TrainingKernels training = trainingKernels(buildLayer("btt(in=1024, out=1024, rank=4)"), DType::F32);
  ASSERT_EQ(training.savedCount(), 1u);
  EXPECT_EQ(emitStage(training.forward, EmitStage::Asm).find("vmovss"), std::string::npos);
  expectMatchesReference(training.forward, {1, 9, 100});
}

// The panels of BTT's parameter-gradient GEMMs are packed with whole-vector copies of 8 or 32
// floats (or not at all, when they are contiguous runs already); as plain copies LLVM left them
// as scalar loads and stores, a sixth of the backward.
TEST(CpuCodegenStages, RowSumPanelsAreNotCopiedFloatByFloat) {
  if (!hostHasAvx512()) GTEST_SKIP() << "the packing widths checked here are AVX-512's";
  const std::string assembly =
      emitStage(backwardKernel(buildLayer("btt(in=1024, out=1024, rank=1)"), DType::F32), EmitStage::Asm);
  EXPECT_EQ(assembly.find("vmovss"), std::string::npos);
}

// BTT at d = 1088 has factors of 34: tiled whole, its register tiles were 17 floats wide, an
// odd-width vector that LLVM broke into scalars (forward 15 ms against 1.1 ms split into
// 32 + 2). Split, they are whole registers (16 floats with AVX-512, 8 with AVX2).
TEST(CpuCodegenStages, OddFactorsGetNoOddWidthVectors) {
  const std::string llvmIr =
      emitStage(forwardKernel(buildLayer("btt(in=1088, out=1088, rank=1)"), DType::F32), EmitStage::Llvm);
  EXPECT_EQ(llvmIr.find("<17 x float>"), std::string::npos);
  EXPECT_NE(llvmIr.find(hostHasAvx512() ? "<16 x float>" : "<8 x float>"), std::string::npos);
}

// Monarch's 60 x 60 blocks: register tiles over a 60-wide vector dim were 4 floats wide on
// AVX2 (a quarter of the 4 x 16 tile's FMAs per step; d = 3600 forward 69-80 ms against 36-48
// split). Split at a multiple of two registers, most of the dim gets full-width tiles.
TEST(CpuCodegenStages, NarrowVectorDimsGetFullWidthRegisterTiles) {
  const std::string scheduled =
      emitStage(forwardKernel(buildLayer("monarch(in=240, out=240, blocks=4)"), DType::F32), EmitStage::ScheduledMlir);
  EXPECT_NE(scheduled.find(hostHasAvx512() ? "vector<8x32xf32>" : "vector<4x16xf32>"), std::string::npos);
}

TEST(CpuCodegenStages, IdentityNamesTheCompilerAndHost) {
  const std::string identity = codegenIdentity();
  EXPECT_NE(identity.find("einjit-cpu-codegen"), std::string::npos);
  EXPECT_NE(identity.find("LLVM 19"), std::string::npos);
  EXPECT_EQ(identity, codegenIdentity());
}

TEST(CpuCodegenStages, UnsupportedProgramsThrowUserError) {
  KernelProgram withNorm = matmul(DType::F32, 4, 4);
  withNorm.ops[0].kind = ir::OpKind::WeightNorm;
  EXPECT_THROW(compileToObject(withNorm), UserError);
  KernelProgram badEquation = matmul(DType::F32, 4, 4);
  badEquation.ops[0].equation = "zi,ix->zo";
  EXPECT_THROW(emitStage(badEquation, EmitStage::Mlir), UserError);
}

// --- loader ---------------------------------------------------------------------------------------

TEST(CpuCodegenLoader, RejectsGarbageAndTruncatedObjects) {
  const KernelProgram program = matmul(DType::F32, 16, 16);
  EXPECT_THROW(loadObject("", program), UserError);
  EXPECT_THROW(loadObject("definitely not an object file", program), UserError);
  const std::string object = compileToObject(program);
  for (std::size_t size : {std::size_t{4}, std::size_t{64}, object.size() / 2, object.size() - 1})
    EXPECT_THROW(loadObject(object.substr(0, size), program), UserError) << "truncated to " << size;
}

TEST(CpuCodegenLoader, RejectsObjectWithoutEntryPoint) {
  const KernelProgram program = matmul(DType::F32, 16, 16);
  std::string object = compileToObject(program);
  const std::string entry = kEntrySymbol;
  std::string renamed = entry;
  renamed.back() = 'X';
  for (auto at = object.find(entry); at != std::string::npos; at = object.find(entry, at + 1))
    object.replace(at, entry.size(), renamed);
  EXPECT_THROW(loadObject(object, program), UserError);
}

// A symbol the object calls that nothing defines is a load error that names it, and leaves
// the loader (one JIT for the process) able to load the next kernel.
TEST(CpuCodegenLoader, ReportsAnUndefinedSymbol) {
  const KernelProgram program = matmul(DType::F32, 64, 48);  // allocates its packed panels
  std::string object = compileToObject(program);
  const std::string alloc = cpu::detail::kScratchAllocSymbol;
  std::string missing = alloc;
  missing.back() = 'X';
  ASSERT_NE(object.find(alloc), std::string::npos);
  for (auto at = object.find(alloc); at != std::string::npos; at = object.find(alloc, at + 1))
    object.replace(at, alloc.size(), missing);
  try {
    loadObject(object, program);
    ADD_FAILURE() << "loaded an object with an undefined symbol";
  } catch (const UserError& error) {
    EXPECT_NE(std::string(error.what()).find(missing), std::string::npos) << error.what();
  }
  expectMatchesReference(program, {1, 9});
}

// Kernels are linked into a JIT shared by the process, each into a library of its own (they
// all define the same entry symbol): two loads of one program run side by side, and unloading
// one leaves the other working.
TEST(CpuCodegenLoader, KernelsOfOneProgramLoadSideBySide) {
  const KernelProgram program = matmul(DType::F32, 64, 48);
  const std::string object = compileToObject(program);
  auto first = loadObject(object, program);
  auto second = loadObject(object, program);
  std::vector<float> x(2 * 64, 0.5f), w(64 * 48, 0.25f), y1(2 * 48), y2(2 * 48);
  first->call(2, {x.data(), w.data(), y1.data()});
  second->call(2, {x.data(), w.data(), y2.data()});
  EXPECT_EQ(y1, y2);
  EXPECT_FLOAT_EQ(y1[0], 64 * 0.5f * 0.25f);
  first.reset();
  std::fill(y2.begin(), y2.end(), 0.0f);
  second->call(2, {x.data(), w.data(), y2.data()});
  EXPECT_EQ(y1, y2);
}

TEST(CpuCodegenLoader, CallChecksTheBufferCount) {
  const KernelProgram program = matmul(DType::F32, 16, 16);
  const auto kernel = loadObject(compileToObject(program), program);
  EXPECT_THROW(kernel->call(1, {}), UserError);
  std::vector<float> x(16), w(256), y(16);
  EXPECT_THROW(kernel->call(-1, {x.data(), w.data(), y.data()}), UserError);
}

}  // namespace
}  // namespace einjit::cpu
