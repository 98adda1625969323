// Builders for dense, low-rank, Kronecker and Monarch layers (docs/layouts.md).
#include <string>

#include "frontend/structures/LayerBuilder.h"

namespace einjit::structures {

// y[z,o] = sum_i x[z,i] W[i,o];  W (d_in, d_out).
void buildDense(ir::LayerProgram& program, NormKind norm) {
  ProgramBuilder b(program, norm);
  const ir::ValueId x = b.input();
  const ir::ValueId w = b.core("W", {program.dIn, program.dOut});
  b.finish(b.contract("zi,io->zo", {x, w}));
}

// y = (x U) V;  U (d_in, r), V (r, d_out).  Labels: i input, r rank, o output.
void buildLowRank(ir::LayerProgram& program, NormKind norm, int64_t rank) {
  program.attributes.emplace_back("rank", std::to_string(rank));
  ProgramBuilder b(program, norm);
  const ir::ValueId x = b.input();
  const ir::ValueId u = b.core("U", {program.dIn, rank});
  const ir::ValueId t = b.contract("zi,ir->zr", {x, u});
  const ir::ValueId v = b.core("V", {rank, program.dOut});
  b.finish(b.contract("zr,ro->zo", {t, v}));
}

// W = K1 ⊗ K2 ⊗ ... ⊗ Kk (numpy.kron order), K_t (m_t, n_t), m = factorize(d_in, k),
// n = factorize(d_out, k); k = 2 names the factors L and R.
// x viewed as (N, m_0, ..., m_{k-1}); factor t replaces input axis t (label 'a'+t) by output
// axis t (label 'A'+t), first factor first: t1[z,A,b] = sum_a x[z,a,b] L[a,A], y = sum_b t1 R.
void buildKronecker(ir::LayerProgram& program, NormKind norm, int factors) {
  const std::vector<int64_t> m = factorize(program.dIn, factors);
  const std::vector<int64_t> n = factorize(program.dOut, factors);
  program.attributes.emplace_back("factors", std::to_string(factors));
  program.attributes.emplace_back("in_factors", joinSizes(m));
  program.attributes.emplace_back("out_factors", joinSizes(n));

  ProgramBuilder b(program, norm);
  Shape viewed{ir::kRows};
  viewed.insert(viewed.end(), m.begin(), m.end());
  ir::ValueId act = b.reshape(b.input(), viewed);
  std::string labels(1, kRowLabel);
  for (int t = 0; t < factors; ++t) labels += static_cast<char>('a' + t);

  for (int t = 0; t < factors; ++t) {
    const std::string name = factors == 2 ? (t == 0 ? "L" : "R") : numbered("K", t + 1);
    const ir::ValueId factor = b.core(name, {m[t], n[t]});
    const char in = static_cast<char>('a' + t), out = static_cast<char>('A' + t);
    std::string result = labels;
    result[t + 1] = out;
    act = b.contract(labels + "," + in + out + "->" + result, {act, factor});
    labels = result;
  }
  b.finish(b.reshape(act, {ir::kRows, program.dOut}));
}

// Monarch(b): p = ceil(d_in/b), s = ceil(d_out/b); W1 (b, q, p), W2 (b, s, q) stored (out, in).
//   x padded to b*p, viewed (N, b, p)               labels z k p
//   t[z,k,q] = sum_p x[z,k,p] W1[k,q,p]             block-diagonal 1
//   t viewed as (N, q, b) (feature rr*b + l)        P1: a reshape; its transpose is the index
//   u[z,s,l] = sum_r t[z,r,l] W2[l,s,r]             order of the next einsum (labels r l)
//   y = u viewed (N, s*b) (feature ss*b + l)        P2: folded into the result order "zsl"
//   truncated to d_out.
void buildMonarch(ir::LayerProgram& program, NormKind norm, int64_t blocks) {
  const int64_t p = (program.dIn + blocks - 1) / blocks;
  const int64_t s = (program.dOut + blocks - 1) / blocks;
  const bool inSmaller = checkedMul(blocks, p) < checkedMul(blocks, s);
  const int64_t q = inSmaller ? p : s;  // W1.shape[1], the middle width
  program.attributes.emplace_back("blocks", std::to_string(blocks));
  program.attributes.emplace_back("in_block", std::to_string(p));
  program.attributes.emplace_back("mid_block", std::to_string(q));
  program.attributes.emplace_back("out_block", std::to_string(s));
  if (blocks * p != program.dIn)
    program.attributes.emplace_back("padded_in", std::to_string(blocks * p));
  if (blocks * s != program.dOut)
    program.attributes.emplace_back("padded_out", std::to_string(blocks * s));

  ProgramBuilder b(program, norm);
  const ir::ValueId x = b.reshape(b.resizeFeatures(b.input(), blocks * p), {ir::kRows, blocks, p});
  const ir::ValueId w1 = b.core("W1", {blocks, q, p});
  const ir::ValueId t = b.contract("zkp,kqp->zkq", {x, w1});
  const ir::ValueId shuffled = b.reshape(t, {ir::kRows, q, blocks});
  const ir::ValueId w2 = b.core("W2", {blocks, s, q});
  const ir::ValueId u = b.contract("zrl,lsr->zsl", {shuffled, w2});
  b.finish(b.resizeFeatures(b.reshape(u, {ir::kRows, checkedMul(s, blocks)}), program.dOut));
}

}  // namespace einjit::structures
