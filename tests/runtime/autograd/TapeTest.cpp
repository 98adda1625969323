// The tape on its own, with hand-written closures (the ops have their own tests).
#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

#include "einjit/error.h"
#include "runtime/autograd/Tape.h"

namespace einjit::rt {
namespace {

// y = factor * x as a recorded op, written the way runtime/ops writes its ops.
Var scaled(Tape& tape, const Var& x, double factor, std::vector<int>* order = nullptr, int id = 0) {
  auto y = std::make_shared<VarData>();
  y->value = Tensor(x->value.dtype(), x->value.shape());
  for (int64_t i = 0; i < x->value.numel(); ++i) y->value.set(i, factor * x->value.get(i));
  y->requiresGrad = x->requiresGrad;
  if (tape.recording() && x->requiresGrad)
    tape.record([x, y, factor, order, id] {
      if (order) order->push_back(id);
      if (y->grad.numel() == 0) return;
      Tensor& dx = x->gradOrZero();
      for (int64_t i = 0; i < dx.numel(); ++i) dx.set(i, dx.get(i) + factor * y->grad.get(i));
    });
  return y;
}

Tensor scalar(double value) {
  Tensor tensor(DType::F64, {});
  tensor.set(0, value);
  return tensor;
}

TEST(Tape, LeavesAndGradOrZero) {
  Var p = parameter(Tensor(DType::F32, {2, 3}), "w");
  Var c = constant(Tensor(DType::F64, {4}));
  EXPECT_TRUE(p->requiresGrad);
  EXPECT_EQ(p->name, "w");
  EXPECT_FALSE(c->requiresGrad);
  EXPECT_EQ(p->grad.numel(), 0);
  Tensor& grad = p->gradOrZero();
  EXPECT_EQ(grad.shape(), (Shape{2, 3}));
  EXPECT_EQ(grad.dtype(), DType::F32);
  for (int64_t i = 0; i < grad.numel(); ++i) EXPECT_EQ(grad.get(i), 0.0);
  grad.set(0, 5);
  EXPECT_EQ(p->gradOrZero().get(0), 5.0);  // an existing gradient is kept
  zeroGrad({p, c, nullptr});
  EXPECT_EQ(p->grad.numel(), 0);
}

TEST(Tape, RunsClosuresNewestFirstAndAccumulates) {
  Tape tape;
  std::vector<int> order;
  Var x = parameter(scalar(2.0), "x");
  Var a = scaled(tape, x, 3.0, &order, 1);  // a = 3x
  Var b = scaled(tape, a, 5.0, &order, 2);  // b = 15x
  Var c = scaled(tape, x, 7.0, &order, 3);  // c = 7x, not on the path to the loss
  EXPECT_EQ(tape.size(), 3u);
  tape.backward(b);
  EXPECT_EQ(order, (std::vector<int>{3, 2, 1}));
  EXPECT_EQ(x->grad.get(0), 15.0);
  EXPECT_EQ(c->grad.numel(), 0);  // never reached: no gradient
  EXPECT_EQ(tape.size(), 0u);

  // Gradients accumulate across backward passes until zeroGrad.
  Var d = scaled(tape, x, 4.0);
  tape.backward(d);
  EXPECT_EQ(x->grad.get(0), 19.0);
}

TEST(Tape, VectorJacobianSeed) {
  Tape tape;
  Tensor values(DType::F64, {3});
  Var x = parameter(values, "x");
  Var y = scaled(tape, x, -2.0);
  Tensor seed(DType::F64, {3});
  for (int64_t i = 0; i < 3; ++i) seed.set(i, static_cast<double>(i + 1));
  tape.backward(y, seed);
  for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(x->grad.get(i), -2.0 * static_cast<double>(i + 1));
}

TEST(Tape, NotRecordingKeepsNothing) {
  Tape tape;
  tape.setRecording(false);
  Var x = parameter(scalar(1.0), "x");
  scaled(tape, x, 2.0);
  EXPECT_EQ(tape.size(), 0u);
  tape.setRecording(true);
  scaled(tape, x, 2.0);
  EXPECT_EQ(tape.size(), 1u);
  tape.clear();
  EXPECT_EQ(tape.size(), 0u);
}

TEST(Tape, Errors) {
  Tape tape;
  Var x = parameter(Tensor(DType::F64, {2}), "x");
  Var y = scaled(tape, x, 2.0);
  EXPECT_THROW(tape.backward(y), UserError);  // two elements
  EXPECT_THROW(tape.backward(nullptr), UserError);
  EXPECT_THROW(tape.backward(constant(scalar(1.0))), UserError);  // depends on nothing
  EXPECT_THROW(tape.backward(y, Tensor(DType::F64, {3})), UserError);

  // A closure that throws: the error reaches the caller and the tape is empty afterwards.
  Var z = parameter(scalar(1.0), "z");
  tape.clear();
  tape.record([] { throw std::runtime_error("closure failed"); });
  Var w = scaled(tape, z, 1.0);
  EXPECT_THROW(tape.backward(w), std::runtime_error);
  EXPECT_EQ(tape.size(), 0u);
}

}  // namespace
}  // namespace einjit::rt
