// Runs the built IR with a tiny interpreter written here and compares y with the layouts of
// docs/layouts.md, each implemented directly as plain loops over the stored parameters.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "frontend/structures/Structures.h"

namespace einjit {
namespace {

// prefix + k, built by appending (GCC 12 -Wrestrict misfires on "literal" + std::string&&).
std::string indexed(const std::string& prefix, int k) {
  std::string text = prefix;
  text += std::to_string(k);
  return text;
}

struct Array {
  Shape shape;
  std::vector<double> data;
};

int64_t numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Deterministic pseudo-random values in [-1, 1).
std::vector<double> randomValues(int64_t count, uint64_t seed) {
  std::vector<double> values(count);
  uint64_t state = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (double& v : values) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    v = static_cast<double>(state >> 11) / 9007199254740992.0 * 2 - 1;
  }
  return values;
}

// --- the interpreter -------------------------------------------------------------------------

Array contract(const std::string& equation, const std::vector<const Array*>& inputs) {
  const std::size_t arrow = equation.find("->");
  std::vector<std::string> terms;
  std::string lhs = equation.substr(0, arrow);
  for (std::size_t start = 0;;) {
    const std::size_t comma = lhs.find(',', start);
    terms.push_back(lhs.substr(start, comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  const std::string out = equation.substr(arrow + 2);
  std::string labels;
  std::map<char, int64_t> size;
  for (std::size_t k = 0; k < terms.size(); ++k)
    for (std::size_t a = 0; a < terms[k].size(); ++a) {
      if (!size.count(terms[k][a])) labels += terms[k][a];
      size[terms[k][a]] = inputs[k]->shape.at(a);
    }
  Array result;
  for (char c : out) result.shape.push_back(size.at(c));
  result.data.assign(numel(result.shape), 0);
  std::map<char, int64_t> index;
  for (char c : labels) index[c] = 0;
  auto flat = [&](const std::string& term, const Shape& shape) {
    int64_t f = 0;
    for (std::size_t a = 0; a < term.size(); ++a) f = f * shape[a] + index[term[a]];
    return f;
  };
  while (true) {
    double product = 1;
    for (std::size_t k = 0; k < terms.size(); ++k)
      product *= inputs[k]->data[flat(terms[k], inputs[k]->shape)];
    result.data[flat(out, result.shape)] += product;
    std::size_t l = labels.size();
    while (l > 0 && ++index[labels[l - 1]] == size[labels[l - 1]]) index[labels[--l]] = 0;
    if (l == 0) break;
  }
  return result;
}

Array run(const ir::LayerProgram& p, const std::map<std::string, Array>& params, const Array& x) {
  const int64_t rows = x.shape[0];
  std::vector<Array> values(p.values.size());
  values[p.input] = x;
  for (const ir::Parameter& param : p.params) values[param.value] = params.at(param.name);
  for (const ir::Op& op : p.ops) {
    const Array& in = values[op.inputs.at(0)];
    Array out;
    switch (op.kind) {
      case ir::OpKind::Contract: {
        std::vector<const Array*> operands;
        for (ir::ValueId v : op.inputs) operands.push_back(&values[v]);
        out = contract(op.equation, operands);
        break;
      }
      case ir::OpKind::Reshape:
        out = in;
        out.shape = op.shape;
        std::replace(out.shape.begin(), out.shape.end(), ir::kRows, rows);
        EXPECT_EQ(numel(out.shape), numel(in.shape));
        break;
      case ir::OpKind::Pad:
      case ir::OpKind::Truncate: {  // axis 1 of a (N, k) activation
        EXPECT_EQ(op.axis, 1);
        out.shape = {rows, op.size};
        out.data.assign(rows * op.size, 0);
        for (int64_t n = 0; n < rows; ++n)
          for (int64_t k = 0; k < std::min(op.size, in.shape[1]); ++k)
            out.data[n * op.size + k] = in.data[n * in.shape[1] + k];
        break;
      }
      case ir::OpKind::WeightNorm: {
        double sum = 0;
        for (double v : in.data) sum += v * v;
        const double rms = std::sqrt(sum / static_cast<double>(in.data.size()) + op.normEps);
        const double gain = op.inputs.size() == 2 ? values[op.inputs[1]].data.at(0) : 1.0;
        out = in;
        for (double& v : out.data) v = gain * v / std::max(1.0, rms / op.normSigma);
        break;
      }
      case ir::OpKind::Permute:
      case ir::OpKind::Add:
        ADD_FAILURE() << "the builders emit no " << ir::opKindName(op.kind) << " ops";
        return {};
    }
    EXPECT_EQ(out.shape.size(), p.values[op.result].shape.size());
    values[op.result] = out;
  }
  return values[p.output];
}

// --- direct layouts (docs/layouts.md) ---------------------------------------------------------

using Params = std::map<std::string, Array>;

// Mixed-radix digits of `index` over `sizes`, first digit most significant.
std::vector<int64_t> digits(int64_t index, const std::vector<int64_t>& sizes) {
  std::vector<int64_t> d(sizes.size());
  for (std::size_t k = sizes.size(); k-- > 0;) {
    d[k] = index % sizes[k];
    index /= sizes[k];
  }
  return d;
}

// y[j] from x, for every structure, written from the formulas (not the IR).
std::vector<double> directForward(const std::string& structure, const ir::LayerProgram& p,
                                  const Params& w, const std::vector<double>& xRow) {
  const int64_t dIn = p.dIn, dOut = p.dOut;
  std::vector<double> y(dOut, 0);
  auto W = [&](const std::string& name) -> const Array& { return w.at(name); };
  auto at = [](const Array& a, std::initializer_list<int64_t> idx) {
    int64_t f = 0, k = 0;
    for (int64_t i : idx) f = f * a.shape[k++] + i;
    return a.data[f];
  };
  auto attr = [&](const std::string& key) {
    for (const auto& [k, v] : p.attributes)
      if (k == key) return std::stoll(v);
    return -1LL;
  };
  if (structure == "dense") {
    for (int64_t i = 0; i < dIn; ++i)
      for (int64_t o = 0; o < dOut; ++o) y[o] += xRow[i] * at(W("W"), {i, o});
  } else if (structure == "lowrank") {
    const Array& u = W("U");
    const Array& v = W("V");
    for (int64_t r = 0; r < u.shape[1]; ++r) {
      double t = 0;
      for (int64_t i = 0; i < dIn; ++i) t += xRow[i] * at(u, {i, r});
      for (int64_t o = 0; o < dOut; ++o) y[o] += t * at(v, {r, o});
    }
  } else if (structure == "kron") {
    // W = K1 ⊗ ... ⊗ Kk: W[i, j] = prod_t K_t[i_t, j_t], digits most significant first.
    const int k = static_cast<int>(attr("factors"));
    const auto m = factorize(dIn, k), n = factorize(dOut, k);
    for (int64_t i = 0; i < dIn; ++i)
      for (int64_t j = 0; j < dOut; ++j) {
        const auto id = digits(i, m), jd = digits(j, n);
        double entry = 1;
        for (int t = 0; t < k; ++t) {
          const std::string name = k == 2 ? (t == 0 ? "L" : "R") : indexed("K", t + 1);
          entry *= at(W(name), {id[t], jd[t]});
        }
        y[j] += xRow[i] * entry;
      }
  } else if (structure == "tt") {
    // W[i, j] = G1[0,i1,j1,:] G2[:,i2,j2,:] ... Gc[:,ic,jc,0].
    const int c = static_cast<int>(attr("cores"));
    const auto n = factorize(dIn, c), m = factorize(dOut, c);
    for (int64_t i = 0; i < dIn; ++i)
      for (int64_t j = 0; j < dOut; ++j) {
        const auto id = digits(i, n), jd = digits(j, m);
        std::vector<double> chain = {1.0};
        for (int t = 0; t < c; ++t) {
          const Array& g = W(indexed("G", t + 1));
          std::vector<double> next(g.shape[3], 0);
          for (int64_t a = 0; a < g.shape[0]; ++a)
            for (int64_t b = 0; b < g.shape[3]; ++b) next[b] += chain[a] * at(g, {a, id[t], jd[t], b});
          chain = next;
        }
        y[j] += xRow[i] * chain[0];
      }
  } else if (structure == "monarch") {
    const int64_t b = attr("blocks");
    const Array& w1 = W("W1");
    const Array& w2 = W("W2");
    const int64_t q = w1.shape[1], p1 = w1.shape[2], s = w2.shape[1];
    std::vector<double> xp(b * p1, 0);
    std::copy(xRow.begin(), xRow.begin() + std::min(dIn, b * p1), xp.begin());
    std::vector<double> t(b * q, 0);  // t[k, qq] flattened
    for (int64_t k = 0; k < b; ++k)
      for (int64_t qq = 0; qq < q; ++qq)
        for (int64_t pp = 0; pp < p1; ++pp) t[k * q + qq] += xp[k * p1 + pp] * at(w1, {k, qq, pp});
    // t viewed (q, b): element (rr, l) is t_flat[rr*b + l]; u[l, ss]; y_ext[ss*b + l].
    for (int64_t l = 0; l < b; ++l)
      for (int64_t ss = 0; ss < s; ++ss) {
        double u = 0;
        for (int64_t rr = 0; rr < q; ++rr) u += t[rr * b + l] * at(w2, {l, ss, rr});
        if (ss * b + l < dOut) y[ss * b + l] = u;
      }
  } else if (structure == "btt" && attr("cores") == 2) {
    const auto m = factorize(dIn, 2), n = factorize(dOut, 2);  // [m0, m1], [n0, n1]
    const Array& w0 = W("W0");
    const Array& w1 = W("W1");
    const int64_t r = attr("rank");
    // Z[i1, j0, s] = sum_i0 x[i1*m0 + i0] W0[i1, i0, j0*r + s]
    std::vector<double> z(m[1] * n[0] * r, 0);
    for (int64_t i1 = 0; i1 < m[1]; ++i1)
      for (int64_t j0 = 0; j0 < n[0]; ++j0)
        for (int64_t s = 0; s < r; ++s)
          for (int64_t i0 = 0; i0 < m[0]; ++i0)
            z[(i1 * n[0] + j0) * r + s] += xRow[i1 * m[0] + i0] * at(w0, {i1, i0, j0 * r + s});
    // y[j0*n1 + j1] = sum_{i1, s} Z[i1, j0, s] W1[j0, i1*r + s, j1]
    for (int64_t j0 = 0; j0 < n[0]; ++j0)
      for (int64_t j1 = 0; j1 < n[1]; ++j1)
        for (int64_t i1 = 0; i1 < m[1]; ++i1)
          for (int64_t s = 0; s < r; ++s)
            y[j0 * n[1] + j1] += z[(i1 * n[0] + j0) * r + s] * at(w1, {j0, i1 * r + s, j1});
  } else if (structure == "btt") {
    // The reference c-core form with merged p = m_<t and q = n_>t: Z_t (r_t, p, n_t, q),
    // Z_{t+1}[r', p, mm, q] = sum_{r, nn} W_t[r', r, p, mm, nn, q] Z_t[r, p, nn, q]; the
    // row-major (r', p, mm, q) layout is then re-read as (r', p*m_t + mm, n_{t+1}, q').
    const int c = static_cast<int>(attr("cores"));
    const auto m = factorize(dOut, c), n = factorize(dIn, c);
    std::vector<double> z = xRow;
    for (int t = 0; t < c; ++t) {
      const Array& core = W(indexed("W", t));
      const int64_t rOut = core.shape[0], rIn = core.shape[1], pp = core.shape[2],
                    mm = core.shape[3], nn = core.shape[4], qq = core.shape[5];
      std::vector<double> next(rOut * pp * mm * qq, 0);
      for (int64_t a = 0; a < rOut; ++a)
        for (int64_t b = 0; b < rIn; ++b)
          for (int64_t pi = 0; pi < pp; ++pi)
            for (int64_t mi = 0; mi < mm; ++mi)
              for (int64_t ni = 0; ni < nn; ++ni)
                for (int64_t qi = 0; qi < qq; ++qi)
                  next[((a * pp + pi) * mm + mi) * qq + qi] +=
                      at(core, {a, b, pi, mi, ni, qi}) * z[((b * pp + pi) * nn + ni) * qq + qi];
      z = next;
    }
    y = z;
  } else if (structure == "theta") {
    const int64_t a = attr("a"), b = attr("b"), g = attr("g"), d = attr("d"), e = attr("e"),
                  f = attr("f"), r = attr("r");
    const Array& A = W("A");
    const Array& B = W("B");
    std::vector<double> xp(g * b * a, 0);
    std::copy(xRow.begin(), xRow.begin() + std::min(dIn, g * b * a), xp.begin());
    std::vector<double> Y(f * e * d, 0);
    for (int64_t ff = 0; ff < f; ++ff)
      for (int64_t dd = 0; dd < d; ++dd)
        for (int64_t rr = 0; rr < r; ++rr)
          for (int64_t gg = 0; gg < g; ++gg)
            for (int64_t bb = 0; bb < b; ++bb) {
              double zv = 0;  // Z[f, d, r, g, b]
              for (int64_t aa = 0; aa < a; ++aa)
                zv += xp[(gg * b + bb) * a + aa] * at(A, {ff, dd, rr, gg, aa});
              for (int64_t ee = 0; ee < e; ++ee)
                Y[(ff * e + ee) * d + dd] += zv * at(B, {ff, ee, rr, gg, bb});
            }
    for (int64_t j = 0; j < std::min(dOut, f * e * d); ++j) y[j] = Y[j];
  } else {
    ADD_FAILURE() << "no direct layout for " << structure;
  }
  return y;
}

// Weight norm applied directly: W~ = gamma W / max(1, RMS(W) / sigma), sigma from (d_in_f,
// d_out_f) given by the test (not read from the IR's norm ops).
Array normalised(const Array& w, double gamma, double sigma, double eps) {
  double sum = 0;
  for (double v : w.data) sum += v * v;
  const double rms = std::sqrt(sum / static_cast<double>(w.data.size()) + eps);
  Array out = w;
  for (double& v : out.data) v = gamma * v / std::max(1.0, rms / sigma);
  return out;
}

void expectSameOutputs(const std::string& spec,
                       const std::map<std::string, std::pair<int64_t, int64_t>>& normDims = {},
                       double normEps = 0) {
  SCOPED_TRACE(spec);
  const ir::LayerProgram p = buildLayer(spec);
  Params params;
  uint64_t seed = 1;
  for (const ir::Parameter& param : p.params) {
    Array a{param.shape, randomValues(numel(param.shape), seed++)};
    if (param.isScalarGain) a.data = {1.5};
    params[param.name] = a;
  }
  const int64_t rows = 3;
  const Array x{{rows, p.dIn}, randomValues(rows * p.dIn, 1000)};
  const Array y = run(p, params, x);
  ASSERT_EQ(y.shape, (Shape{rows, p.dOut}));

  Params direct = params;
  for (const auto& [name, dims] : normDims) {
    const double din = static_cast<double>(dims.first), dout = static_cast<double>(dims.second);
    const double gamma = params.count(name + "_gamma") ? params.at(name + "_gamma").data[0] : 1.0;
    direct[name] = normalised(params.at(name), gamma, std::sqrt(std::min(din, dout)) / din, normEps);
  }
  for (int64_t n = 0; n < rows; ++n) {
    const std::vector<double> row(x.data.begin() + n * p.dIn, x.data.begin() + (n + 1) * p.dIn);
    const std::vector<double> expected = directForward(p.structure, p, direct, row);
    for (int64_t j = 0; j < p.dOut; ++j)
      ASSERT_NEAR(y.data[n * p.dOut + j], expected[j], 1e-9) << "row " << n << " feature " << j;
  }
}

TEST(StructureNumerics, Dense) {
  expectSameOutputs("dense(in=5, out=3)");
  expectSameOutputs("dense(in=6, out=4, norm)", {{"W", {6, 4}}}, 1e-8);
}

TEST(StructureNumerics, LowRank) { expectSameOutputs("lowrank(in=7, out=5, rank=2)"); }

TEST(StructureNumerics, Kronecker) {
  expectSameOutputs("kron(in=6, out=10)");
  expectSameOutputs("kron(in=7, out=4)");
  expectSameOutputs("kron(in=12, out=30, factors=3)");
  expectSameOutputs("kron(in=16, out=16, factors=4)");
}

TEST(StructureNumerics, TensorTrain) {
  expectSameOutputs("tt(in=6, out=10, rank=2)");
  expectSameOutputs("tt(in=12, out=30, rank=2, cores=3)");
  expectSameOutputs("tt(in=16, out=8, rank=3, cores=4)");
}

TEST(StructureNumerics, Monarch) {
  expectSameOutputs("monarch(in=16, out=16, blocks=4)");
  expectSameOutputs("monarch(in=12, out=24, blocks=2)");   // in < out: W1 square
  expectSameOutputs("monarch(in=24, out=12, blocks=3)");   // in > out: W2 square
  expectSameOutputs("monarch(in=10, out=20, blocks=3)");   // padded and truncated
  expectSameOutputs("monarch(in=20, out=10, blocks=3)");
  expectSameOutputs("monarch(in=10, out=10, blocks=-1)");  // b = 4
  expectSameOutputs("monarch(in=12, out=12, blocks=6)");   // q != b: P1 is a real reshuffle
}

TEST(StructureNumerics, BttTwoCores) {
  expectSameOutputs("btt(in=12, out=20, rank=2)");
  expectSameOutputs("btt(in=16, out=16, rank=1)");
  expectSameOutputs("btt(in=7, out=5, rank=3)");
  expectSameOutputs("btt(in=24, out=6, rank=2)");
  // btt_norm: W0 maps m0 -> n0 r (4 -> 8), W1 maps m1 r -> n1 (12 -> 5); eps 1e-8.
  expectSameOutputs("btt(in=24, out=20, rank=2, norm)", {{"W0", {4, 8}}, {"W1", {12, 5}}}, 1e-8);
}

TEST(StructureNumerics, BttManyCores) {
  expectSameOutputs("btt(in=24, out=30, rank=2, cores=3)");
  expectSameOutputs("btt(in=16, out=8, rank=3, cores=4)");
  expectSameOutputs("btt(in=12, out=12, rank=1, cores=3)");
}

TEST(StructureNumerics, Theta) {
  const std::vector<std::string> points = {
      "alpha=0.5, beta=0, gamma=0.5, delta=0, epsilon=0.5, phi=0.5, rho=0.5",  // BTT, r = 4
      "alpha=0.5, beta=0.5, gamma=0, delta=0.5, epsilon=0.5, phi=0, rho=0.5",  // TT
      "alpha=0.5, beta=0.25, gamma=0.25, delta=0.25, epsilon=0.5, phi=0.25, rho=0.25",
      "alpha=1, beta=0, gamma=0, delta=0, epsilon=1, phi=0, rho=0.5",  // low-rank
  };
  for (const std::string& point : points) {
    expectSameOutputs("theta(in=16, out=16, " + point + ")");
    expectSameOutputs("theta(in=18, out=15, " + point + ")");  // truncation (16 of 18, 16 -> 15)
    expectSameOutputs("theta(in=15, out=18, " + point + ")");  // padding (15 -> 16, 16 -> 18)
  }
  // einsum_norm (no gain, eps 1e-6) at the TT point, in = out = 16: A 4 -> 16, B 16 -> 4.
  expectSameOutputs("theta(in=16, out=16, " + points[1] + ", norm)", {{"A", {4, 16}}, {"B", {16, 4}}},
                    1e-6);
}

}  // namespace
}  // namespace einjit
