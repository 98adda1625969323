// Builders for tensor-train (TT) and block tensor-train (BTT) layers (docs/layouts.md).
#include <string>

#include "frontend/structures/LayerBuilder.h"

namespace einjit::structures {

namespace {

// Labels of the c-core families (c <= 16): input factor t is 'a'+t, output factor t is 'A'+t,
// rank axis t (t = 0..c) is 'Q'+t, then 'q'.. for t >= 10. None of them is the row label 'z'.
char inputLabel(int t) { return static_cast<char>('a' + t); }
char outputLabel(int t) { return static_cast<char>('A' + t); }
char rankLabel(int t) { return static_cast<char>(t < 10 ? 'Q' + t : 'q' + (t - 10)); }

// Inner ranks r_0..r_c: r at the inside, 1 at both ends.
std::vector<int64_t> trainRanks(int64_t rank, int cores) {
  std::vector<int64_t> ranks(cores + 1, rank);
  ranks.front() = ranks.back() = 1;
  return ranks;
}

// The sizes every train-shaped layer (TT, c-core BTT) starts from, recorded for inspect:
// input factors n = factorize(d_in, c), output factors m = factorize(d_out, c), the rank chain
// r_0 = 1, r_1..r_{c-1} = rank, r_c = 1, and x viewed as (N, 1, n_0..n_{c-1}) (a leading
// size-1 rank axis).
struct TrainFactors {
  std::vector<int64_t> in, out, ranks;
  Shape inputView;
};

TrainFactors trainFactors(ir::LayerProgram& program, int64_t rank, int cores) {
  TrainFactors f{factorize(program.dIn, cores), factorize(program.dOut, cores), trainRanks(rank, cores), {}};
  program.attributes.emplace_back("rank", std::to_string(rank));
  program.attributes.emplace_back("cores", std::to_string(cores));
  program.attributes.emplace_back("in_factors", joinSizes(f.in));
  program.attributes.emplace_back("out_factors", joinSizes(f.out));
  f.inputView = {ir::kRows, 1};
  f.inputView.insert(f.inputView.end(), f.in.begin(), f.in.end());
  return f;
}

}  // namespace

// TT(r, c): n = factorize(d_in, c) input factors, m = factorize(d_out, c) output factors,
// G_t (r_{t-1}, n_t, m_t, r_t), W[(i),(j)] = sum_ranks G1[0,i1,j1,r1] ... Gc[r_{c-1},ic,jc,0].
// The activation before core t is Z (N, m_1..m_{t-1}, r_{t-1}, n_t..n_c) (x viewed with a leading
// size-1 rank axis); core t sums r_{t-1} and n_t and leaves m_t, r_t in their place:
//   c = 2:  "zQab,QaAR->zARb", "zARb,RbBS->zABS".
void buildTensorTrain(ir::LayerProgram& program, NormKind norm, int64_t rank, int cores) {
  const TrainFactors f = trainFactors(program, rank, cores);
  const std::vector<int64_t>& n = f.in;
  const std::vector<int64_t>& m = f.out;
  const std::vector<int64_t>& ranks = f.ranks;

  ProgramBuilder b(program, norm);
  ir::ValueId act = b.reshape(b.input(), f.inputView);
  std::string labels = std::string(1, kRowLabel) + rankLabel(0);
  for (int t = 0; t < cores; ++t) labels += inputLabel(t);

  for (int t = 0; t < cores; ++t) {
    const ir::ValueId core = b.core(numbered("G", t + 1), {ranks[t], n[t], m[t], ranks[t + 1]});
    const std::string coreLabels{rankLabel(t), inputLabel(t), outputLabel(t), rankLabel(t + 1)};
    // Positions in `labels`: row, m_1..m_{t-1} (t of them), r_{t-1}, n_t, ...
    std::string result = labels;
    result.replace(1 + t, 2, std::string{outputLabel(t), rankLabel(t + 1)});
    act = b.contract(labels + "," + coreLabels + "->" + result, {act, core});
    labels = result;
  }
  b.finish(b.reshape(act, {ir::kRows, program.dOut}));
}

namespace {

// BTT, 2 cores: [m0, m1] = factorize(d_in, 2), [n0, n1] = factorize(d_out, 2).
// W0 (m1, m0, n0*r) viewed (m1, m0, n0, r); W1 (n0, m1*r, n1) viewed (n0, m1, r, n1).
// Labels: a = i1, b = i0, c = j0, d = j1, r = rank.
//   Z[z,a,c,r] = sum_b x[z,a,b] W0[a,b,c,r]             x viewed (N, m1, m0)
//   y[z,c,d]   = sum_{a,r} Z[z,a,c,r] W1[c,a,r,d]        y viewed (N, n0*n1)
void buildBtt2(ir::LayerProgram& program, NormKind norm, int64_t rank) {
  const std::vector<int64_t> m = factorize(program.dIn, 2);
  const std::vector<int64_t> n = factorize(program.dOut, 2);
  program.attributes.emplace_back("rank", std::to_string(rank));
  program.attributes.emplace_back("cores", "2");
  program.attributes.emplace_back("in_factors", joinSizes(m));
  program.attributes.emplace_back("out_factors", joinSizes(n));

  ProgramBuilder b(program, norm);
  const ir::ValueId x = b.reshape(b.input(), {ir::kRows, m[1], m[0]});
  const ir::ValueId w0 =
      b.reshape(b.core("W0", {m[1], m[0], checkedMul(n[0], rank)}), {m[1], m[0], n[0], rank});
  const ir::ValueId z = b.contract("zab,abcr->zacr", {x, w0});
  const ir::ValueId w1 =
      b.reshape(b.core("W1", {n[0], checkedMul(m[1], rank), n[1]}), {n[0], m[1], rank, n[1]});
  const ir::ValueId y = b.contract("zacr,card->zcd", {z, w1});
  b.finish(b.reshape(y, {ir::kRows, program.dOut}));
}

// BTT, c >= 3 cores (the reference's c-core form): m = factorize(d_out, c) OUTPUT factors,
// n = factorize(d_in, c) INPUT factors; core t (r_{t+1}, r_t, m_{<t}, m_t, n_t, n_{>t}) applied as
// einsum 'rtpmnq,btpnq->brpmq'. Here the merged axes p = m_{<t} and q = n_{>t} stay split into
// their factors in both the activation and the core (a Reshape of the core), so no activation
// reshapes are needed between cores: the activation before core t is
// Z_t (N, r_t, m_0..m_{t-1}, n_t..n_{c-1}), with x viewed as (N, 1, n_0..n_{c-1}).
void buildBttCores(ir::LayerProgram& program, NormKind norm, int64_t rank, int cores) {
  const TrainFactors f = trainFactors(program, rank, cores);
  const std::vector<int64_t>& n = f.in;
  const std::vector<int64_t>& m = f.out;
  const std::vector<int64_t>& ranks = f.ranks;

  ProgramBuilder b(program, norm);
  ir::ValueId act = b.reshape(b.input(), f.inputView);

  for (int t = 0; t < cores; ++t) {
    int64_t before = 1, after = 1;  // m_{<t}, n_{>t}
    for (int k = 0; k < t; ++k) before = checkedMul(before, m[k]);
    for (int k = t + 1; k < cores; ++k) after = checkedMul(after, n[k]);
    const Shape stored{ranks[t + 1], ranks[t], before, m[t], n[t], after};
    Shape split{ranks[t + 1], ranks[t]};
    std::string coreLabels{rankLabel(t + 1), rankLabel(t)};
    std::string actLabels{kRowLabel, rankLabel(t)};
    std::string result{kRowLabel, rankLabel(t + 1)};
    for (int k = 0; k <= t; ++k) {
      split.push_back(m[k]);
      coreLabels += outputLabel(k);
      if (k < t) actLabels += outputLabel(k);
      result += outputLabel(k);
    }
    for (int k = t; k < cores; ++k) {
      split.push_back(n[k]);
      coreLabels += inputLabel(k);
      actLabels += inputLabel(k);
      if (k > t) result += inputLabel(k);
    }
    const ir::ValueId core = b.reshape(b.core(numbered("W", t), stored), split);
    act = b.contract(actLabels + "," + coreLabels + "->" + result, {act, core});
  }
  b.finish(b.reshape(act, {ir::kRows, program.dOut}));
}

}  // namespace

void buildBtt(ir::LayerProgram& program, NormKind norm, int64_t rank, int cores) {
  if (cores == 2)
    buildBtt2(program, norm, rank);
  else
    buildBttCores(program, norm, rank, cores);
}

}  // namespace einjit::structures
