#include "bench/NaiveLayers.h"

#include <string>
#include <vector>

#include "einjit/error.h"

namespace einjit::bench {

namespace {

// One call's operands: x (N, dIn), dy (N, dOut) or null for a forward-only call.
struct Call {
  const ir::LayerProgram& layer;
  const TensorMap& params;
  const float* x;
  const float* dy;
  int64_t rows;

  const Tensor& param(const std::string& name) const {
    const ir::Parameter* declared = layer.findParam(name);
    const auto found = params.find(name);
    if (declared == nullptr || found == params.end())
      throw UserError("naive loops: missing parameter '" + name + "'");
    if (found->second.dtype() != DType::F32 || found->second.shape() != declared->shape)
      throw UserError("naive loops: parameter '" + name + "' must be float32 " +
                      shapeToString(declared->shape));
    return found->second;
  }
  const float* weights(const std::string& name) const { return param(name).data<float>(); }
};

float* allocate(Tensor& tensor, Shape shape) {
  tensor = Tensor(DType::F32, std::move(shape));
  return tensor.data<float>();
}

// y[n,o] = sum_i x[n,i] W[i,o].
LayerGradients dense(const Call& c) {
  const int64_t in = c.layer.dIn, out = c.layer.dOut, rows = c.rows;
  const float* w = c.weights("W");
  LayerGradients g;
  float* y = allocate(g.y, {rows, out});
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t o = 0; o < out; ++o) {
      float sum = 0;
      for (int64_t i = 0; i < in; ++i) sum += c.x[n * in + i] * w[i * out + o];
      y[n * out + o] = sum;
    }
  if (c.dy == nullptr) return g;

  float* dx = allocate(g.dx, {rows, in});
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t i = 0; i < in; ++i) {
      float sum = 0;
      for (int64_t o = 0; o < out; ++o) sum += c.dy[n * out + o] * w[i * out + o];
      dx[n * in + i] = sum;
    }
  float* dw = allocate(g.dparams["W"], {in, out});
  for (int64_t i = 0; i < in; ++i)
    for (int64_t o = 0; o < out; ++o) {
      float sum = 0;
      for (int64_t n = 0; n < rows; ++n) sum += c.x[n * in + i] * c.dy[n * out + o];
      dw[i * out + o] = sum;
    }
  return g;
}

// t[n,k] = sum_i x[n,i] U[i,k];  y[n,o] = sum_k t[n,k] V[k,o].
LayerGradients lowRank(const Call& c) {
  const int64_t in = c.layer.dIn, out = c.layer.dOut, rows = c.rows;
  const int64_t rank = c.param("U").shape()[1];
  const float* u = c.weights("U");
  const float* v = c.weights("V");
  std::vector<float> t(rows * rank);
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t k = 0; k < rank; ++k) {
      float sum = 0;
      for (int64_t i = 0; i < in; ++i) sum += c.x[n * in + i] * u[i * rank + k];
      t[n * rank + k] = sum;
    }
  LayerGradients g;
  float* y = allocate(g.y, {rows, out});
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t o = 0; o < out; ++o) {
      float sum = 0;
      for (int64_t k = 0; k < rank; ++k) sum += t[n * rank + k] * v[k * out + o];
      y[n * out + o] = sum;
    }
  if (c.dy == nullptr) return g;

  std::vector<float> dt(rows * rank);
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t k = 0; k < rank; ++k) {
      float sum = 0;
      for (int64_t o = 0; o < out; ++o) sum += c.dy[n * out + o] * v[k * out + o];
      dt[n * rank + k] = sum;
    }
  float* dv = allocate(g.dparams["V"], {rank, out});
  for (int64_t k = 0; k < rank; ++k)
    for (int64_t o = 0; o < out; ++o) {
      float sum = 0;
      for (int64_t n = 0; n < rows; ++n) sum += t[n * rank + k] * c.dy[n * out + o];
      dv[k * out + o] = sum;
    }
  float* du = allocate(g.dparams["U"], {in, rank});
  for (int64_t i = 0; i < in; ++i)
    for (int64_t k = 0; k < rank; ++k) {
      float sum = 0;
      for (int64_t n = 0; n < rows; ++n) sum += c.x[n * in + i] * dt[n * rank + k];
      du[i * rank + k] = sum;
    }
  float* dx = allocate(g.dx, {rows, in});
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t i = 0; i < in; ++i) {
      float sum = 0;
      for (int64_t k = 0; k < rank; ++k) sum += dt[n * rank + k] * u[i * rank + k];
      dx[n * in + i] = sum;
    }
  return g;
}

// Monarch: W1 (b, q, p), W2 (b, s, q), blocks stored (out, in).
//   t[n, k*q+qq]  = sum_pp xpad[n, k*p+pp] W1[k,qq,pp]
//   u[n,l,ss]     = sum_rr t[n, rr*b+l] W2[l,ss,rr]
//   y[n, ss*b+l]  = u[n,l,ss]   (for ss*b+l < dOut)
LayerGradients monarch(const Call& c) {
  const int64_t in = c.layer.dIn, out = c.layer.dOut, rows = c.rows;
  const Shape& shape1 = c.param("W1").shape();
  const int64_t b = shape1[0], q = shape1[1], p = shape1[2];
  const int64_t s = c.param("W2").shape()[1];
  const float* w1 = c.weights("W1");
  const float* w2 = c.weights("W2");
  const auto xpad = [&](int64_t n, int64_t feature) {
    return feature < in ? c.x[n * in + feature] : 0.0f;
  };

  std::vector<float> t(rows * b * q);
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t k = 0; k < b; ++k)
      for (int64_t qq = 0; qq < q; ++qq) {
        float sum = 0;
        for (int64_t pp = 0; pp < p; ++pp) sum += xpad(n, k * p + pp) * w1[(k * q + qq) * p + pp];
        t[n * b * q + k * q + qq] = sum;
      }
  LayerGradients g;
  float* y = allocate(g.y, {rows, out});
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t l = 0; l < b; ++l)
      for (int64_t ss = 0; ss < s; ++ss) {
        if (ss * b + l >= out) continue;  // truncated
        float sum = 0;
        for (int64_t rr = 0; rr < q; ++rr)
          sum += t[n * b * q + rr * b + l] * w2[(l * s + ss) * q + rr];
        y[n * out + ss * b + l] = sum;
      }
  if (c.dy == nullptr) return g;

  const auto du = [&](int64_t n, int64_t l, int64_t ss) {
    return ss * b + l < out ? c.dy[n * out + ss * b + l] : 0.0f;
  };
  float* dw2 = allocate(g.dparams["W2"], {b, s, q});
  for (int64_t l = 0; l < b; ++l)
    for (int64_t ss = 0; ss < s; ++ss)
      for (int64_t rr = 0; rr < q; ++rr) {
        float sum = 0;
        for (int64_t n = 0; n < rows; ++n) sum += t[n * b * q + rr * b + l] * du(n, l, ss);
        dw2[(l * s + ss) * q + rr] = sum;
      }
  std::vector<float> dt(rows * b * q);
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t rr = 0; rr < q; ++rr)
      for (int64_t l = 0; l < b; ++l) {
        float sum = 0;
        for (int64_t ss = 0; ss < s; ++ss) sum += du(n, l, ss) * w2[(l * s + ss) * q + rr];
        dt[n * b * q + rr * b + l] = sum;
      }
  float* dw1 = allocate(g.dparams["W1"], {b, q, p});
  for (int64_t k = 0; k < b; ++k)
    for (int64_t qq = 0; qq < q; ++qq)
      for (int64_t pp = 0; pp < p; ++pp) {
        float sum = 0;
        for (int64_t n = 0; n < rows; ++n) sum += xpad(n, k * p + pp) * dt[n * b * q + k * q + qq];
        dw1[(k * q + qq) * p + pp] = sum;
      }
  float* dx = allocate(g.dx, {rows, in});
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t i = 0; i < in; ++i) {
      const int64_t k = i / p, pp = i % p;
      float sum = 0;
      for (int64_t qq = 0; qq < q; ++qq)
        sum += dt[n * b * q + k * q + qq] * w1[(k * q + qq) * p + pp];
      dx[n * in + i] = sum;
    }
  return g;
}

// BTT, 2 cores: W0 (m1, m0, n0*r), W1 (n0, m1*r, n1); x[n, i1*m0+i0], y[n, j0*n1+j1].
//   Z[n,i1,j0,s] = sum_i0 x[n,i1,i0] W0[i1,i0,j0*r+s]
//   y[n,j0,j1]   = sum_{i1,s} Z[n,i1,j0,s] W1[j0,i1*r+s,j1]
LayerGradients btt(const Call& c) {
  const int64_t in = c.layer.dIn, out = c.layer.dOut, rows = c.rows;
  const Shape& shape0 = c.param("W0").shape();
  const Shape& shape1 = c.param("W1").shape();
  const int64_t m1 = shape0[0], m0 = shape0[1], n0 = shape1[0], n1 = shape1[2];
  const int64_t r = shape1[1] / m1;
  const float* w0 = c.weights("W0");
  const float* w1 = c.weights("W1");
  const auto zIndex = [&](int64_t n, int64_t i1, int64_t j0, int64_t s) {
    return ((n * m1 + i1) * n0 + j0) * r + s;
  };
  const auto w0Index = [&](int64_t i1, int64_t i0, int64_t j0, int64_t s) {
    return (i1 * m0 + i0) * n0 * r + j0 * r + s;
  };
  const auto w1Index = [&](int64_t j0, int64_t i1, int64_t s, int64_t j1) {
    return (j0 * m1 * r + i1 * r + s) * n1 + j1;
  };

  std::vector<float> z(rows * m1 * n0 * r);
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t i1 = 0; i1 < m1; ++i1)
      for (int64_t j0 = 0; j0 < n0; ++j0)
        for (int64_t s = 0; s < r; ++s) {
          float sum = 0;
          for (int64_t i0 = 0; i0 < m0; ++i0)
            sum += c.x[n * in + i1 * m0 + i0] * w0[w0Index(i1, i0, j0, s)];
          z[zIndex(n, i1, j0, s)] = sum;
        }
  LayerGradients g;
  float* y = allocate(g.y, {rows, out});
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t j0 = 0; j0 < n0; ++j0)
      for (int64_t j1 = 0; j1 < n1; ++j1) {
        float sum = 0;
        for (int64_t i1 = 0; i1 < m1; ++i1)
          for (int64_t s = 0; s < r; ++s)
            sum += z[zIndex(n, i1, j0, s)] * w1[w1Index(j0, i1, s, j1)];
        y[n * out + j0 * n1 + j1] = sum;
      }
  if (c.dy == nullptr) return g;

  std::vector<float> dz(z.size());
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t i1 = 0; i1 < m1; ++i1)
      for (int64_t j0 = 0; j0 < n0; ++j0)
        for (int64_t s = 0; s < r; ++s) {
          float sum = 0;
          for (int64_t j1 = 0; j1 < n1; ++j1)
            sum += c.dy[n * out + j0 * n1 + j1] * w1[w1Index(j0, i1, s, j1)];
          dz[zIndex(n, i1, j0, s)] = sum;
        }
  float* dw1 = allocate(g.dparams["W1"], shape1);
  for (int64_t j0 = 0; j0 < n0; ++j0)
    for (int64_t i1 = 0; i1 < m1; ++i1)
      for (int64_t s = 0; s < r; ++s)
        for (int64_t j1 = 0; j1 < n1; ++j1) {
          float sum = 0;
          for (int64_t n = 0; n < rows; ++n)
            sum += z[zIndex(n, i1, j0, s)] * c.dy[n * out + j0 * n1 + j1];
          dw1[w1Index(j0, i1, s, j1)] = sum;
        }
  float* dw0 = allocate(g.dparams["W0"], shape0);
  for (int64_t i1 = 0; i1 < m1; ++i1)
    for (int64_t i0 = 0; i0 < m0; ++i0)
      for (int64_t j0 = 0; j0 < n0; ++j0)
        for (int64_t s = 0; s < r; ++s) {
          float sum = 0;
          for (int64_t n = 0; n < rows; ++n)
            sum += c.x[n * in + i1 * m0 + i0] * dz[zIndex(n, i1, j0, s)];
          dw0[w0Index(i1, i0, j0, s)] = sum;
        }
  float* dx = allocate(g.dx, {rows, in});
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t i1 = 0; i1 < m1; ++i1)
      for (int64_t i0 = 0; i0 < m0; ++i0) {
        float sum = 0;
        for (int64_t j0 = 0; j0 < n0; ++j0)
          for (int64_t s = 0; s < r; ++s)
            sum += dz[zIndex(n, i1, j0, s)] * w0[w0Index(i1, i0, j0, s)];
        dx[n * in + i1 * m0 + i0] = sum;
      }
  return g;
}

bool hasWeightNorm(const ir::LayerProgram& layer) {
  for (const ir::Op& op : layer.ops)
    if (op.kind == ir::OpKind::WeightNorm) return true;
  return false;
}

LayerGradients run(const ir::LayerProgram& layer, const TensorMap& params, const Tensor& x,
                   const Tensor* dy) {
  if (!hasNaiveLoops(layer))
    throw UserError("naive loops cover dense, lowrank, monarch and 2-core btt without norm, not '" +
                    layer.spec + "'");
  if (x.dtype() != DType::F32 || x.rank() != 2 || x.shape()[1] != layer.dIn)
    throw UserError("naive loops: x must be float32 (N, " + std::to_string(layer.dIn) + "), not " +
                    shapeToString(x.shape()));
  const int64_t rows = x.shape()[0];
  if (dy != nullptr && (dy->dtype() != DType::F32 || dy->shape() != Shape{rows, layer.dOut}))
    throw UserError("naive loops: dy must be float32 " + shapeToString({rows, layer.dOut}));
  const Call call{layer, params, x.data<float>(), dy ? dy->data<float>() : nullptr, rows};
  if (layer.structure == "dense") return dense(call);
  if (layer.structure == "lowrank") return lowRank(call);
  if (layer.structure == "monarch") return monarch(call);
  return btt(call);
}

}  // namespace

bool hasNaiveLoops(const ir::LayerProgram& layer) {
  if (hasWeightNorm(layer)) return false;
  if (layer.structure == "btt") {
    const ir::Parameter* core = layer.findParam("W0");
    return layer.params.size() == 2 && core != nullptr && core->shape.size() == 3;
  }
  return layer.structure == "dense" || layer.structure == "lowrank" || layer.structure == "monarch";
}

Tensor naiveForward(const ir::LayerProgram& layer, const TensorMap& params, const Tensor& x) {
  return run(layer, params, x, nullptr).y;
}

LayerGradients naiveBackward(const ir::LayerProgram& layer, const TensorMap& params,
                             const Tensor& x, const Tensor& dy) {
  return run(layer, params, x, &dy);
}

}  // namespace einjit::bench
