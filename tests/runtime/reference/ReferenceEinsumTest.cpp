#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "compiler/planner/ContractionPlan.h"
#include "einjit/error.h"
#include "einjit/tensor.h"
#include "frontend/einsum/BoundEinsum.h"
#include "runtime/reference/ReferenceExecutor.h"

namespace einjit {
namespace {

Tensor makeTensor(Shape shape, const std::vector<double>& values, DType dtype = DType::F64) {
  Tensor tensor(dtype, std::move(shape));
  EXPECT_EQ(tensor.numel(), static_cast<int64_t>(values.size()));
  for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, values[i]);
  return tensor;
}

// Values that are exact in float32 and differ from element to element.
Tensor patterned(Shape shape, int salt, DType dtype = DType::F64) {
  Tensor tensor(dtype, std::move(shape));
  for (int64_t i = 0; i < tensor.numel(); ++i)
    tensor.set(i, static_cast<double>((i * 7 + salt * 3) % 11) - 5.0);
  return tensor;
}

void expectValues(const Tensor& actual, const Shape& shape, const std::vector<double>& expected,
                  double tolerance = 0) {
  ASSERT_EQ(actual.shape(), shape);
  ASSERT_EQ(actual.numel(), static_cast<int64_t>(expected.size()));
  for (int64_t i = 0; i < actual.numel(); ++i)
    EXPECT_NEAR(actual.get(i), expected[i], tolerance) << "element " << i;
}

TEST(ReferenceEinsum, MatrixMultiply) {
  const Tensor a = makeTensor({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor b = makeTensor({3, 2}, {7, 8, 9, 10, 11, 12});
  const Tensor c = referenceEinsum("ij,jk->ik", {&a, &b});
  EXPECT_EQ(c.dtype(), DType::F64);
  expectValues(c, {2, 2}, {58, 64, 139, 154});
  // Implicit output: "ij,jk" means "ij,jk->ik"; "ji,jk" transposes a.
  expectValues(referenceEinsum("ij,jk", {&a, &b}), {2, 2}, {58, 64, 139, 154});
  const Tensor at = makeTensor({3, 2}, {1, 4, 2, 5, 3, 6});
  expectValues(referenceEinsum("ji,jk->ik", {&at, &b}), {2, 2}, {58, 64, 139, 154});
}

TEST(ReferenceEinsum, TraceDiagonalTransposeSum) {
  const Tensor m = makeTensor({3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  expectValues(referenceEinsum("ii->", {&m}), {}, {15});
  expectValues(referenceEinsum("ii", {&m}), {}, {15});
  expectValues(referenceEinsum("ii->i", {&m}), {3}, {1, 5, 9});
  expectValues(referenceEinsum("ij->ji", {&m}), {3, 3}, {1, 4, 7, 2, 5, 8, 3, 6, 9});
  expectValues(referenceEinsum("ij->", {&m}), {}, {45});
  expectValues(referenceEinsum("ij->j", {&m}), {3}, {12, 15, 18});
  // A diagonal inside a pairwise contraction: sum_i t[i,i,j] v[j] per i.
  const Tensor t = makeTensor({2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  const Tensor v = makeTensor({2}, {10, 1});
  // t[0,0,:] = (1,2), t[1,1,:] = (7,8)
  expectValues(referenceEinsum("iij,j->i", {&t, &v}), {2}, {12, 78});
}

TEST(ReferenceEinsum, OuterProductAndHadamard) {
  const Tensor u = makeTensor({2}, {2, 3});
  const Tensor w = makeTensor({3}, {1, 10, 100});
  expectValues(referenceEinsum("i,j->ij", {&u, &w}), {2, 3}, {2, 20, 200, 3, 30, 300});
  expectValues(referenceEinsum("i,i->i", {&u, &u}), {2}, {4, 9});
  expectValues(referenceEinsum("i,i->", {&u, &u}), {}, {13});
}

TEST(ReferenceEinsum, SizeOneDimensionsBroadcast) {
  const Tensor row = makeTensor({1, 3}, {1, 2, 3});
  const Tensor m = makeTensor({2, 3}, {1, 1, 1, 2, 2, 2});
  expectValues(referenceEinsum("ij,ij->ij", {&row, &m}), {2, 3}, {1, 2, 3, 2, 4, 6});
  // Summed broadcast label: sum_i row[0,j] m[i,j] = 3 * row[j].
  expectValues(referenceEinsum("ij,ij->j", {&row, &m}), {3}, {3, 6, 9});
  // Broadcast ellipsis dims: (2,1,2) and (3,2) -> (2,3,2)... as batch of elementwise products.
  const Tensor a = makeTensor({2, 1, 2}, {1, 2, 3, 4});
  const Tensor b = makeTensor({3, 2}, {1, 10, 100, 1000, 2, 20});
  expectValues(referenceEinsum("...i,...i->...i", {&a, &b}), {2, 3, 2},
               {1, 20, 100, 2000, 2, 40, 3, 40, 300, 4000, 6, 80});
}

TEST(ReferenceEinsum, EllipsisBatchMatmul) {
  const Tensor a = patterned({2, 3, 2, 4}, 1);
  const Tensor b = patterned({3, 4, 5}, 2);  // broadcast over the leading batch dim
  const Tensor c = referenceEinsum("...ij,...jk->...ik", {&a, &b});
  ASSERT_EQ(c.shape(), (Shape{2, 3, 2, 5}));
  for (int p = 0; p < 2; ++p)
    for (int q = 0; q < 3; ++q)
      for (int i = 0; i < 2; ++i)
        for (int k = 0; k < 5; ++k) {
          double expected = 0;
          for (int j = 0; j < 4; ++j)
            expected += a.get(((p * 3 + q) * 2 + i) * 4 + j) * b.get((q * 4 + j) * 5 + k);
          EXPECT_EQ(c.get(((p * 3 + q) * 2 + i) * 5 + k), expected);
        }
}

TEST(ReferenceEinsum, Scalars) {
  const Tensor two = makeTensor({}, {2});
  const Tensor three = makeTensor({}, {3});
  expectValues(referenceEinsum(",->", {&two, &three}), {}, {6});
  expectValues(referenceEinsum("->", {&two}), {}, {2});
  const Tensor v = makeTensor({3}, {1, 2, 3});
  expectValues(referenceEinsum("i,->i", {&v, &three}), {3}, {3, 6, 9});
  expectValues(referenceEinsum(",i,->", {&two, &v, &three}), {}, {36});
}

TEST(ReferenceEinsum, ZeroSizeDimensions) {
  const Tensor a = Tensor(DType::F64, {2, 0});
  const Tensor b = Tensor(DType::F64, {0, 3});
  // Summing over an empty label gives zeros.
  expectValues(referenceEinsum("ij,jk->ik", {&a, &b}), {2, 3}, {0, 0, 0, 0, 0, 0});
  const Tensor empty = Tensor(DType::F32, {0, 4});
  const Tensor m = patterned({4, 2}, 0, DType::F32);
  const Tensor c = referenceEinsum("ij,jk->ik", {&empty, &m});
  EXPECT_EQ(c.shape(), (Shape{0, 2}));
  EXPECT_EQ(c.numel(), 0);
  expectValues(referenceEinsum("ij->", {&empty}), {}, {0});
}

// out[a,e] = sum_{b,c,d} A[a,b] B[b,c] C[c,d] D[d,e], by explicit loops.
std::vector<double> chainByLoops(const Tensor& a, const Tensor& b, const Tensor& c,
                                 const Tensor& d) {
  const int64_t na = a.shape()[0], nb = b.shape()[0], nc = c.shape()[0], nd = d.shape()[0],
                ne = d.shape()[1];
  std::vector<double> out(na * ne, 0.0);
  for (int64_t i = 0; i < na; ++i)
    for (int64_t j = 0; j < nb; ++j)
      for (int64_t k = 0; k < nc; ++k)
        for (int64_t l = 0; l < nd; ++l)
          for (int64_t m = 0; m < ne; ++m)
            out[i * ne + m] +=
                a.get(i * nb + j) * b.get(j * nc + k) * c.get(k * nd + l) * d.get(l * ne + m);
  return out;
}

TEST(ReferenceEinsum, ChainsGiveTheSameResultInEveryPlanOrder) {
  const Tensor a = patterned({3, 4}, 1), b = patterned({4, 2}, 2), c = patterned({2, 5}, 3),
               d = patterned({5, 3}, 4);
  const std::vector<double> expected = chainByLoops(a, b, c, d);
  const std::vector<const Tensor*> operands = {&a, &b, &c, &d};
  expectValues(referenceEinsum("ab,bc,cd,de->ae", operands), {3, 3}, expected);

  const BoundEinsum einsum =
      bindEinsum(parseEinsum("ab,bc,cd,de->ae"), {a.shape(), b.shape(), c.shape(), d.shape()});
  const ContractionPlan optimal =
      planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
  const ContractionPlan greedy = planContraction(einsum.inputLabels, einsum.outputLabels,
                                                 einsum.labelSize, {.maxOptimalOperands = 1});
  // A hand-made plan: ((C, D), then A, then B), with the intermediates in unusual orders.
  const int la = einsum.inputLabels[0][0], lb = einsum.inputLabels[1][0],
            lc = einsum.inputLabels[2][0], le = einsum.inputLabels[3][1];
  ContractionPlan manual;
  manual.steps = {{2, 3, {le, lc}, 0, 0},          // list: A B (CD: e c)
                  {2, 0, {lc, la, le, lb}, 0, 0},  // list: B (CDA: c a e b)
                  {1, 0, {la, le}, 0, 0}};
  for (const ContractionPlan& plan : {optimal, greedy, manual})
    expectValues(referenceEinsum(einsum, plan, operands, DType::F64), {3, 3}, expected);

  // Three operands sharing one label: out[i] = sum_j x[i,j] y[j] z[j].
  const Tensor x = patterned({2, 3}, 5), y = patterned({3}, 6), z = patterned({3}, 7);
  std::vector<double> three(2, 0.0);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) three[i] += x.get(i * 3 + j) * y.get(j) * z.get(j);
  expectValues(referenceEinsum("ij,j,j->i", {&x, &y, &z}), {2}, three);
}

TEST(ReferenceEinsum, Float32AndFloat64) {
  const Tensor a32 = makeTensor({2, 3}, {1, 2, 3, 4, 5, 6}, DType::F32);
  const Tensor b32 = makeTensor({3, 2}, {7, 8, 9, 10, 11, 12}, DType::F32);
  const Tensor b64 = b32.to(DType::F64);
  const Tensor c32 = referenceEinsum("ij,jk->ik", {&a32, &b32});
  EXPECT_EQ(c32.dtype(), DType::F32);
  expectValues(c32, {2, 2}, {58, 64, 139, 154});
  // Any float64 operand makes the result float64.
  EXPECT_EQ(referenceEinsum("ij,jk->ik", {&a32, &b64}).dtype(), DType::F64);

  // Sums are accumulated in double: 1e8 + 1 - 1e8 is 1, where a float32 sum would give 0.
  const Tensor v = makeTensor({3}, {1e8, 1, -1e8}, DType::F32);
  const Tensor ones = makeTensor({3}, {1, 1, 1}, DType::F32);
  expectValues(referenceEinsum("i,i->", {&v, &ones}), {}, {1});

  // The explicit overload stores in the requested dtype.
  const BoundEinsum einsum = bindEinsum(parseEinsum("ij,jk->ik"), {a32.shape(), b32.shape()});
  const ContractionPlan plan =
      planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
  const Tensor c64 = referenceEinsum(einsum, plan, {&a32, &b32}, DType::F64);
  EXPECT_EQ(c64.dtype(), DType::F64);
  expectValues(c64, {2, 2}, {58, 64, 139, 154});
  // 1/3 stored as float32 rounds.
  const Tensor third = makeTensor({}, {1.0 / 3.0}, DType::F64);
  const Tensor rounded = referenceEinsum(bindEinsum(parseEinsum("->"), {Shape{}}),
                                         planContraction({{}}, {}, {}), {&third}, DType::F32);
  EXPECT_EQ(rounded.get(0), static_cast<double>(1.0f / 3.0f));
}

TEST(ReferenceEinsum, RejectsMismatchedOperandsAndPlans) {
  const Tensor a = patterned({2, 3}, 1), b = patterned({3, 4}, 2), wrong = patterned({4, 4}, 3);
  EXPECT_THROW(referenceEinsum("ij,jk->ik", {&a, &wrong}), UserError);
  EXPECT_THROW(referenceEinsum("ij,jk->ik", {&a}), UserError);
  EXPECT_THROW(referenceEinsum("ij,jk->ik", {&a, nullptr}), UserError);

  const BoundEinsum einsum = bindEinsum(parseEinsum("ij,jk->ik"), {a.shape(), b.shape()});
  const ContractionPlan plan =
      planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
  EXPECT_THROW(referenceEinsum(einsum, plan, {&a, &wrong}, DType::F64), UserError);
  EXPECT_THROW(referenceEinsum(einsum, plan, {&b, &a}, DType::F64), UserError);
  ContractionPlan badPosition = plan;
  badPosition.steps[0].rhs = 5;
  EXPECT_THROW(referenceEinsum(einsum, badPosition, {&a, &b}, DType::F64), UserError);
  ContractionPlan wrongOrder = plan;
  std::swap(wrongOrder.steps[0].resultLabels[0], wrongOrder.steps[0].resultLabels[1]);
  EXPECT_THROW(referenceEinsum(einsum, wrongOrder, {&a, &b}, DType::F64), UserError);
  // A step may not sum a label that a later operand still needs.
  const BoundEinsum chain =
      bindEinsum(parseEinsum("ij,jk,kl->il"), {a.shape(), b.shape(), Shape{4, 2}});
  const Tensor c = patterned({4, 2}, 4);
  ContractionPlan dropsNeeded;
  dropsNeeded.steps = {{0, 1, {chain.inputLabels[0][0]}, 0, 0}, {0, 1, chain.outputLabels, 0, 0}};
  EXPECT_THROW(referenceEinsum(chain, dropsNeeded, {&a, &b, &c}, DType::F64), UserError);
  ContractionPlan noSteps = plan;
  noSteps.steps.clear();
  EXPECT_THROW(referenceEinsum(einsum, noSteps, {&a, &b}, DType::F64), UserError);
}

}  // namespace
}  // namespace einjit
