#include "compiler/cuda/CudaEmitter.h"

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "einjit/error.h"

namespace einjit::cuda {
namespace {

using ir::OpKind;
using ir::ValueId;

// Bumped whenever the generated code changes for the same program; part of cache keys through
// the source text's header.
constexpr const char* kCodegenVersion = "einjit-cuda-codegen 2";
// Rows per block of the row tile kernel: 128 when it has one phase (a plain matrix product
// reuses each weight tile across more rows), else 64, halved while the tile does not fit.
constexpr int64_t kMaxRowsPerTile = 64;
constexpr int64_t kMaxRowsPerSinglePhaseTile = 128;
constexpr int64_t kMinRowsPerTile = 4;
// With tiled contractions, fewer rows would leave most of a 16-row (tensor-core) tile empty:
// intermediates move to global scratch first.
constexpr int64_t kMinRowsPerTiledTile = 16;
// Upper bound on partial results per row-summed value: chunks x elements stays below this.
constexpr int64_t kChunkSlabElements = int64_t{1} << 24;
constexpr int64_t kMaxChunks = 256;
constexpr int64_t kRowsPerChunk = 128;
constexpr int64_t kMaxGridBlocks = 65535;
// Tiled contractions: 256 threads as a 16 x 16 grid over the output tile.
constexpr int kTileThreads = 256;
constexpr int kThreadGridSide = 16;
// Blocks a tiled row sum aims for (chunks x tiles), enough to fill a large GPU twice over.
constexpr int64_t kTargetRowSumBlocks = 2048;

std::string num(int64_t value) { return std::to_string(value) + "LL"; }

// The host flavour's runtime: CUDA's thread indices as globals, and a block scheduler that runs
// every thread of a block as a fiber (ucontext) up to its next __syncthreads() in turn, so
// thread-private state (register tiles, loop counters) survives barriers exactly as on the GPU.
// A block where some threads end while others wait at a barrier is reported as a problem.
constexpr const char* kHostSimulationPrelude = R"CUDA(#include <cstring>
#include <functional>
#include <ucontext.h>
#include <vector>
#define __restrict__
#define EINJIT_FN static inline
struct einjit_dim { unsigned x = 0; };
static einjit_dim blockIdx, threadIdx, blockDim, gridDim;
static ucontext_t einjit_sim_scheduler;
static std::vector<ucontext_t> einjit_sim_threads;
static std::vector<std::vector<char>> einjit_sim_stacks;
static std::vector<char> einjit_sim_done;
static const std::function<void()>* einjit_sim_body = nullptr;
static const char* einjit_sim_error = nullptr;
extern "C" const char* einjit_sim_problem() { return einjit_sim_error; }
static void einjit_sim_entry() {
  (*einjit_sim_body)();
  einjit_sim_done[threadIdx.x] = 1;
}
static void __syncthreads() { swapcontext(&einjit_sim_threads[threadIdx.x], &einjit_sim_scheduler); }
static void einjit_sim_block(unsigned block, const std::function<void()>& body) {
  einjit_sim_body = &body;
  einjit_sim_threads.assign(block, ucontext_t());
  einjit_sim_done.assign(block, 0);
  if (einjit_sim_stacks.size() < block) einjit_sim_stacks.resize(block);
  for (unsigned t = 0; t < block; ++t) {
    einjit_sim_stacks[t].resize(1 << 18);
    getcontext(&einjit_sim_threads[t]);
    einjit_sim_threads[t].uc_stack.ss_sp = einjit_sim_stacks[t].data();
    einjit_sim_threads[t].uc_stack.ss_size = einjit_sim_stacks[t].size();
    einjit_sim_threads[t].uc_link = &einjit_sim_scheduler;
    makecontext(&einjit_sim_threads[t], einjit_sim_entry, 0);
  }
  for (;;) {  // a round: every thread runs to its next barrier or its end
    for (unsigned t = 0; t < block; ++t) {
      threadIdx.x = t;
      swapcontext(&einjit_sim_scheduler, &einjit_sim_threads[t]);
    }
    unsigned done = 0;
    for (unsigned t = 0; t < block; ++t) done += einjit_sim_done[t];
    if (done == block) return;
    if (done > 0) {
      einjit_sim_error = "some threads of a block ended while others waited at __syncthreads()";
      return;
    }
  }
}
EINJIT_FN float einjit_bits_to_float(unsigned u) { float x; std::memcpy(&x, &u, 4); return x; }
EINJIT_FN unsigned einjit_float_to_bits(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
)CUDA";

// bf16 tensor-core shims: wmma m16n16k16 (row-major A and B in shared memory, fp32
// accumulators) as inline PTX, which needs no CUDA headers under NVRTC.
constexpr const char* kWmmaDevice = R"CUDA(struct einjit_frag_a { unsigned x[4]; };
struct einjit_frag_b { unsigned x[4]; };
struct einjit_frag_c { float x[8]; };
EINJIT_FN void einjit_fill_zero(einjit_frag_c& c) { for (int i = 0; i < 8; ++i) c.x[i] = 0.0f; }
EINJIT_FN void einjit_load_a(einjit_frag_a& a, const unsigned short* p, unsigned ld) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("wmma.load.a.sync.aligned.row.m16n16k16.shared.bf16 {%0,%1,%2,%3}, [%4], %5;"
               : "=r"(a.x[0]), "=r"(a.x[1]), "=r"(a.x[2]), "=r"(a.x[3]) : "r"(s), "r"(ld));
}
EINJIT_FN void einjit_load_b(einjit_frag_b& b, const unsigned short* p, unsigned ld) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("wmma.load.b.sync.aligned.row.m16n16k16.shared.bf16 {%0,%1,%2,%3}, [%4], %5;"
               : "=r"(b.x[0]), "=r"(b.x[1]), "=r"(b.x[2]), "=r"(b.x[3]) : "r"(s), "r"(ld));
}
EINJIT_FN void einjit_mma(einjit_frag_c& c, const einjit_frag_a& a, const einjit_frag_b& b) {
  asm volatile("wmma.mma.sync.aligned.row.row.m16n16k16.f32.bf16.bf16.f32 "
               "{%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9,%10,%11}, {%12,%13,%14,%15}, {%0,%1,%2,%3,%4,%5,%6,%7};"
               : "+f"(c.x[0]), "+f"(c.x[1]), "+f"(c.x[2]), "+f"(c.x[3]), "+f"(c.x[4]), "+f"(c.x[5]),
                 "+f"(c.x[6]), "+f"(c.x[7])
               : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]), "r"(b.x[2]),
                 "r"(b.x[3]));
}
EINJIT_FN void einjit_store_c(float* p, const einjit_frag_c& c, unsigned ld) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("wmma.store.d.sync.aligned.row.m16n16k16.shared.f32 [%0], {%1,%2,%3,%4,%5,%6,%7,%8}, %9;"
               :: "r"(s), "f"(c.x[0]), "f"(c.x[1]), "f"(c.x[2]), "f"(c.x[3]), "f"(c.x[4]), "f"(c.x[5]),
                  "f"(c.x[6]), "f"(c.x[7]), "r"(ld) : "memory");
}
)CUDA";

// The same shims on the host: a fragment is the whole 16x16 tile. Every lane of a warp makes
// the same call with the same arguments (wmma requires that), so each simulated lane computes
// the whole tile and the stores write identical values; products are fp32 from bf16 operands.
constexpr const char* kWmmaHost = R"CUDA(struct einjit_frag_a { float x[256]; };
struct einjit_frag_b { float x[256]; };
struct einjit_frag_c { float x[256]; };
EINJIT_FN void einjit_fill_zero(einjit_frag_c& c) { for (int i = 0; i < 256; ++i) c.x[i] = 0.0f; }
EINJIT_FN void einjit_load_a(einjit_frag_a& a, const unsigned short* p, unsigned ld) {
  for (int i = 0; i < 16; ++i)
    for (int k = 0; k < 16; ++k) a.x[i * 16 + k] = einjit_bits_to_float((unsigned)p[i * ld + k] << 16);
}
EINJIT_FN void einjit_load_b(einjit_frag_b& b, const unsigned short* p, unsigned ld) {
  for (int k = 0; k < 16; ++k)
    for (int j = 0; j < 16; ++j) b.x[k * 16 + j] = einjit_bits_to_float((unsigned)p[k * ld + j] << 16);
}
EINJIT_FN void einjit_mma(einjit_frag_c& c, const einjit_frag_a& a, const einjit_frag_b& b) {
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j)
      for (int k = 0; k < 16; ++k) c.x[i * 16 + j] += a.x[i * 16 + k] * b.x[k * 16 + j];
}
EINJIT_FN void einjit_store_c(float* p, const einjit_frag_c& c, unsigned ld) {
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) p[i * ld + j] = c.x[i * 16 + j];
}
)CUDA";

struct Terms {
  std::vector<std::string> inputs;
  std::string output;
};

// Equations of checked kernel programs are plain: letters, commas, one "->".
Terms splitEquation(const std::string& equation) {
  Terms terms;
  const std::size_t arrow = equation.find("->");
  std::string current;
  for (std::size_t i = 0; i < arrow; ++i) {
    if (equation[i] == ',') {
      terms.inputs.push_back(current);
      current.clear();
    } else if (equation[i] != ' ') {
      current += equation[i];
    }
  }
  terms.inputs.push_back(current);
  for (std::size_t i = arrow + 2; i < equation.size(); ++i)
    if (equation[i] != ' ') terms.output += equation[i];
  return terms;
}

std::string labelVar(char label) { return std::string("L_") + label; }

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t alignUp(int64_t value, int64_t alignment) { return ceilDiv(value, alignment) * alignment; }

// A two-operand contraction as a batched matrix product: for every batch index,
// C[m, n] = sum_k A[m, k] * B[k, n], each of m, n, k a group of labels (flattened row-major in
// the order given). The row label leads m when the result is a row value and k when the
// contraction sums over rows.
struct GemmForm {
  int a = 0, b = 1;            // operand positions in the op: A holds the M labels
  std::string batch, m, n, k;  // labels, outermost first
  char rowLabel = 0;
  bool rowSum = false;
  std::map<char, int64_t> size;  // static extents (not the row label)
  int64_t batchSize = 1, mStatic = 1, nSize = 1, kStatic = 1;  // row label excluded
};

// The tile of a tiled contraction: BM x BN outputs per block, BK-deep K slices.
struct Tiling {
  int64_t bm = 16, bn = 16, bk = 16;
  bool tensorCores = false;  // bf16 wmma 16x16x16 with fp32 accumulators
  // Shared memory bytes: fp32/fp64 tiles [BK][BM] and [BK][BN]; with tensor cores bf16 tiles
  // [BM][BK+8] and [BK][BN+8] (rows padded against bank conflicts, 32-byte aligned for wmma),
  // reused afterwards as the fp32 output tile [BM][BN+4].
  int64_t stagingBytes(int64_t accumulatorBytes) const {
    if (!tensorCores) return bk * (bm + bn) * accumulatorBytes;
    return std::max(2 * (bm * (bk + 8) + bk * (bn + 8)), 4 * bm * (bn + 4));
  }
  std::string describe() const {
    return std::to_string(bm) + "x" + std::to_string(bn) + "x" + std::to_string(bk) +
           (tensorCores ? " bf16 wmma" : " (" + std::to_string(bm / kThreadGridSide) + "x" +
                                             std::to_string(bn / kThreadGridSide) + " per thread)");
  }
};

// Tile for a batched product of `batch` times (mExtent x kExtent) @ (kExtent x nExtent): the
// (BM, BN) of 16..128 that minimises padded work times shared-memory reads per FMA
// (1 + 16/BM + 16/BN: each thread reads BM/16 + BN/16 values per BM/16 x BN/16 FMAs), larger
// tiles on ties. Tensor cores at bf16 when every extent reaches 16.
Tiling chooseTiling(int64_t batch, int64_t mExtent, int64_t nExtent, int64_t kExtent, bool bf16) {
  Tiling best;
  best.tensorCores = bf16 && mExtent >= 16 && nExtent >= 16 && kExtent >= 16;
  best.bk = kExtent >= 32 ? 32 : 16;
  double bestCost = -1;
  for (int64_t bm : {128, 64, 32, 16})
    for (int64_t bn : {128, 64, 32, 16}) {
      if (best.tensorCores && bm * bn > 64 * 128) continue;  // bounds the fp32 output tile
      const double padded = static_cast<double>(batch) * static_cast<double>(ceilDiv(mExtent, bm) * bm) *
                            static_cast<double>(ceilDiv(nExtent, bn) * bn);
      const double cost = padded * (1.0 + 16.0 / static_cast<double>(bm) + 16.0 / static_cast<double>(bn));
      if (bestCost < 0 || cost < bestCost) {
        bestCost = cost;
        best.bm = bm;
        best.bn = bn;
      }
    }
  return best;
}

// Where a materialised value lives.
enum class Home { Input, Output, GlobalScratch, Shared };

struct ValueInfo {
  bool row = false;           // leading row axis
  bool dependsOnRows = false; // a row value, or computed from one
  bool materialised = false;
  int definingOp = -1;
  Home home = Home::Input;
  int slot = 0;               // argument index among inputs / outputs / scratch
  int64_t sharedOffset = 0;   // Home::Shared: element offset in the tile's shared memory
  int64_t perRow = 0;         // elements per row (row values) or all elements
};

enum class Flavour { Cuda, Host };

class Emitter {
 public:
  Emitter(const KernelProgram& program, const EmitOptions& options)
      : p_(program), options_(options) {
    checkKernelProgram(p_);
    analyse();
  }

  CudaProgram render(Flavour flavour) {
    CudaProgram out;
    out.name = p_.name;
    out.precision = options_.precision;
    out.scratch = scratch_;
    std::string source = prelude(flavour);
    for (const Kernel& kernel : kernels_) {
      source += renderKernel(kernel, flavour);
      out.launches.push_back(kernel.launch);
    }
    out.source = std::move(source);
    return out;
  }

 private:
  struct Kernel {
    KernelLaunch launch;
    std::string preamble;             // block-level declarations (no thread state)
    std::vector<std::string> phases;  // separated by __syncthreads()
  };

  // ---- analysis ----

  Shape shapeOf(ValueId id) const { return p_.values[id].shape; }

  // The non-row extents of a value, outermost first.
  Shape innerShape(ValueId id) const {
    const Shape& shape = p_.values[id].shape;
    return info_[id].row ? Shape(shape.begin() + 1, shape.end()) : shape;
  }

  void analyse() {
    const std::size_t count = p_.values.size();
    info_.assign(count, {});
    for (std::size_t v = 0; v < count; ++v) {
      info_[v].row = p_.isRowValue(static_cast<ValueId>(v));
      info_[v].dependsOnRows = info_[v].row;
      info_[v].perRow = shapeNumel(innerShape(static_cast<ValueId>(v)));
    }
    for (std::size_t k = 0; k < p_.inputs.size(); ++k) {
      info_[p_.inputs[k]].materialised = true;
      info_[p_.inputs[k]].home = Home::Input;
      info_[p_.inputs[k]].slot = static_cast<int>(k);
    }
    for (std::size_t k = 0; k < p_.ops.size(); ++k) {
      const ir::Op& op = p_.ops[k];
      ValueInfo& result = info_[op.result];
      result.definingOp = static_cast<int>(k);
      for (ValueId in : op.inputs) result.dependsOnRows = result.dependsOnRows || info_[in].dependsOnRows;
      if (op.kind == OpKind::Contract) result.materialised = true;
    }
    for (std::size_t k = 0; k < p_.outputs.size(); ++k) {
      ValueInfo& out = info_[p_.outputs[k]];
      out.materialised = true;
      out.home = Home::Output;
      out.slot = static_cast<int>(k);
    }
    // A row value that reads a row-summed value would need every row summed first.
    for (const ir::Op& op : p_.ops) {
      if (!info_[op.result].row) continue;
      for (ValueId in : op.inputs)
        if (!info_[in].row && info_[in].dependsOnRows)
          throw UserError("kernel program '" + p_.name + "': row value '" +
                          p_.values[op.result].name + "' reads '" + p_.values[in].name +
                          "', a sum over all rows; the cuda target computes row values in one "
                          "pass over the rows and cannot do that");
    }
    // Row-summed kernels read row values from global memory: those cannot live in shared memory.
    std::set<ValueId> neededGlobally;
    for (const ir::Op& op : p_.ops)
      if (!info_[op.result].row && info_[op.result].materialised)
        for (ValueId in : op.inputs) collectSources(in, neededGlobally);

    std::vector<ValueId> sharedCandidates;
    for (const ir::Op& op : p_.ops) {
      ValueInfo& result = info_[op.result];
      if (!result.materialised || result.home == Home::Output) continue;
      if (result.row && !neededGlobally.count(op.result)) {
        sharedCandidates.push_back(op.result);
      } else {
        result.home = Home::GlobalScratch;
      }
    }
    for (const ir::Op& op : p_.ops)
      if (info_[op.result].materialised)
        if (std::optional<GemmForm> form = gemmForm(op)) gemm_[op.result] = *form;
    chooseRowTile(sharedCandidates);
    for (const ir::Op& op : p_.ops) {
      ValueInfo& result = info_[op.result];
      if (!result.materialised || result.home != Home::GlobalScratch) continue;
      result.slot = static_cast<int>(scratch_.size());
      ScratchBuffer buffer;
      buffer.purpose = p_.values[op.result].name;
      const int64_t bytes = result.perRow * static_cast<int64_t>(accumulatorBytes(options_.precision));
      (result.row ? buffer.bytesPerRow : buffer.fixedBytes) = bytes;
      scratch_.push_back(buffer);
    }
    planKernels();
  }

  // The materialised values `id` reads through views.
  void collectSources(ValueId id, std::set<ValueId>& sources) const {
    if (info_[id].materialised) {
      sources.insert(id);
      return;
    }
    for (ValueId in : p_.ops[info_[id].definingOp].inputs) collectSources(in, sources);
  }

  // Sizes and label groups of `op` as a batched matrix product, or nullopt when it is not one
  // (more or fewer than two operands, repeated labels, size-1 broadcasts, a label summed within
  // one operand, no row axis, or too small to be worth tiles).
  std::optional<GemmForm> gemmForm(const ir::Op& op) const {
    if (op.kind != OpKind::Contract || op.inputs.size() != 2) return std::nullopt;
    const Terms terms = splitEquation(op.equation);
    GemmForm form;
    auto has = [](const std::string& term, char label) { return term.find(label) != std::string::npos; };
    for (std::size_t k = 0; k < 2; ++k) {
      const std::string& term = terms.inputs[k];
      const Shape& shape = shapeOf(op.inputs[k]);
      for (std::size_t d = 0; d < term.size(); ++d) {
        if (std::count(term.begin(), term.end(), term[d]) != 1) return std::nullopt;
        if (shape[d] == ir::kRows) {
          form.rowLabel = term[d];
          continue;
        }
        auto [entry, inserted] = form.size.try_emplace(term[d], shape[d]);
        if (!inserted && entry->second != shape[d]) return std::nullopt;
      }
    }
    const std::string& out = terms.output;
    for (char label : out)
      if (std::count(out.begin(), out.end(), label) != 1) return std::nullopt;
    if (form.rowLabel == 0) return std::nullopt;
    const bool rowIn0 = has(terms.inputs[0], form.rowLabel), rowIn1 = has(terms.inputs[1], form.rowLabel);
    form.rowSum = !info_[op.result].row;
    if (form.rowSum) {
      if (!rowIn0 || !rowIn1 || has(out, form.rowLabel)) return std::nullopt;
    } else {
      if (rowIn0 == rowIn1 || out.empty() || out[0] != form.rowLabel) return std::nullopt;
      form.a = rowIn0 ? 0 : 1;
      form.b = 1 - form.a;
    }
    const std::string& termA = terms.inputs[form.a];
    const std::string& termB = terms.inputs[form.b];
    for (char label : out)
      if (label != form.rowLabel && has(termA, label) && has(termB, label)) form.batch += label;
    for (char label : termA) {
      if (label == form.rowLabel) continue;
      if (has(out, label)) {
        if (!has(termB, label)) form.m += label;
      } else if (has(termB, label)) {
        form.k += label;
      } else {
        return std::nullopt;
      }
    }
    for (char label : termB)
      if (label != form.rowLabel && !has(out, label) && !has(termA, label)) return std::nullopt;
    for (char label : termB)
      if (label != form.rowLabel && has(out, label) && !has(termA, label)) form.n += label;
    (form.rowSum ? form.k : form.m).insert(0, 1, form.rowLabel);
    auto product = [&](const std::string& labels) {
      int64_t total = 1;
      for (char label : labels)
        if (label != form.rowLabel) total *= form.size.at(label);
      return total;
    };
    form.batchSize = product(form.batch);
    form.mStatic = product(form.m);
    form.nSize = product(form.n);
    form.kStatic = product(form.k);
    if (form.nSize < 2 || (form.rowSum ? form.mStatic : form.kStatic) < 2) return std::nullopt;
    return form;
  }

  bool tilesAllowed() const { return options_.threadsPerBlock == kTileThreads; }

  // Shared bytes the tiled row-value contractions need for `rows` rows per tile (0 if none).
  int64_t rowStagingBytes(int64_t rows) const {
    int64_t most = 0;
    for (const auto& [id, form] : gemm_)
      if (!form.rowSum)
        most = std::max(most, rowTiling(form, rows).stagingBytes(
                                  static_cast<int64_t>(accumulatorBytes(options_.precision))));
    return most;
  }

  Tiling rowTiling(const GemmForm& form, int64_t rows) const {
    return chooseTiling(form.batchSize, rows * form.mStatic, form.nSize, form.kStatic,
                        options_.precision == Precision::BF16);
  }

  // Rows per tile: as many (a power of two up to kMaxRowsPerTile, or
  // kMaxRowsPerSinglePhaseTile for a single phase) as let the tile's intermediates and the tiled
  // contractions' staging fit the shared memory budget; the largest intermediates move to
  // global scratch until at least kMinRowsPerTiledTile (untiled: kMinRowsPerTile) rows fit, and
  // if the staging alone does not fit, the contractions run untiled.
  void chooseRowTile(std::vector<ValueId> candidates) {
    const int64_t bytes = static_cast<int64_t>(accumulatorBytes(options_.precision));
    int64_t rowPhases = 0;
    bool useTiles = tilesAllowed();
    for (const ValueInfo& v : info_) rowPhases += v.row && v.materialised && v.definingOp >= 0;
    const int64_t maxRows = rowPhases == 1 ? kMaxRowsPerSinglePhaseTile : kMaxRowsPerTile;
    auto perRowBytes = [&] {
      int64_t total = 0;
      for (ValueId id : candidates) total += info_[id].perRow * bytes;
      return total;
    };
    for (;;) {
      const int64_t perRow = perRowBytes();
      auto fits = [&](int64_t rows) {
        const int64_t staging = useTiles ? rowStagingBytes(rows) : 0;
        return (staging > 0 ? alignUp(rows * perRow, 128) + staging : rows * perRow) <=
               options_.sharedBytesBudget;
      };
      rowsPerTile_ = maxRows;
      while (rowsPerTile_ > 1 && !fits(rowsPerTile_)) rowsPerTile_ /= 2;
      if (fits(rowsPerTile_) && rowsPerTile_ >= (useTiles ? kMinRowsPerTiledTile : kMinRowsPerTile)) break;
      if (!candidates.empty()) {
        auto largest = std::max_element(candidates.begin(), candidates.end(), [&](ValueId a, ValueId b) {
          return info_[a].perRow < info_[b].perRow;
        });
        info_[*largest].home = Home::GlobalScratch;
        candidates.erase(largest);
      } else if (useTiles) {
        useTiles = false;
      } else {
        break;
      }
    }
    int64_t offset = 0;
    for (ValueId id : candidates) {
      info_[id].home = Home::Shared;
      info_[id].sharedOffset = offset;
      offset += info_[id].perRow * rowsPerTile_;
    }
    sharedBytes_ = offset * bytes;
    if (!useTiles) return;
    stagingOffset_ = alignUp(sharedBytes_, 128);
    int64_t staging = 0;
    for (const auto& [id, form] : gemm_)
      if (!form.rowSum) {
        tiling_[id] = rowTiling(form, rowsPerTile_);
        staging = std::max(staging, tiling_[id].stagingBytes(bytes));
      }
    if (staging > 0) sharedBytes_ = stagingOffset_ + staging;
  }

  void planKernels() {
    // Parameter-only values first, then the row tile kernel, then the row sums and what reads them.
    std::vector<ValueId> before, rowValues, after;
    for (const ir::Op& op : p_.ops) {
      const ValueInfo& result = info_[op.result];
      if (!result.materialised) continue;
      if (result.row)
        rowValues.push_back(op.result);
      else
        (result.dependsOnRows ? after : before).push_back(op.result);
    }
    for (ValueId id : before) addElementKernel(id);
    if (!rowValues.empty()) addRowTileKernel(rowValues);
    for (ValueId id : after) {
      const ir::Op& op = p_.ops[info_[id].definingOp];
      bool readsRows = false;
      for (ValueId in : op.inputs) readsRows = readsRows || info_[in].row;
      if (op.kind == OpKind::Contract && readsRows && gemm_.count(id) && tilesAllowed() &&
          addTiledRowSumKernels(id))
        continue;
      if (op.kind == OpKind::Contract && readsRows)
        addRowSumKernels(id);
      else
        addElementKernel(id);
    }
  }

  // ---- code pieces ----

  std::string storageType() const {
    switch (options_.precision) {
      case Precision::F32: return "float";
      case Precision::F64: return "double";
      case Precision::BF16: return "unsigned short";
    }
    return "float";
  }

  // C++ for element (r, f) of materialised `id`'s storage: r the row relative to row0.
  std::string storageRef(ValueId id) const {
    const ValueInfo& v = info_[id];
    std::string base;
    switch (v.home) {
      case Home::Input: base = "in" + std::to_string(v.slot); break;
      case Home::Output: base = "out" + std::to_string(v.slot); break;
      case Home::GlobalScratch: base = "scratch" + std::to_string(v.slot); break;
      case Home::Shared: base = "sh" + std::to_string(id); break;
    }
    if (!v.row) return base + "[f]";
    if (v.home == Home::Shared) return base + "[r * " + num(v.perRow) + " + f]";
    return base + "[(row0 + r) * " + num(v.perRow) + " + f]";
  }

  bool storedAsStorageType(ValueId id) const {
    return info_[id].home == Home::Input || info_[id].home == Home::Output;
  }

  // Index of axis `axis` of a row-major array with inner extents `shape`, from flat index `f`.
  static std::string unflatten(const Shape& shape, std::size_t axis, const std::string& f) {
    // An empty array has no elements to index (and constant division by zero must not appear).
    if (std::count(shape.begin(), shape.end(), 0) > 0) return "0LL";
    int64_t stride = 1;
    for (std::size_t d = axis + 1; d < shape.size(); ++d) stride *= shape[d];
    return "((" + f + " / " + num(stride) + ") % " + num(shape[axis]) + ")";
  }

  static std::vector<int64_t> strides(const Shape& shape) {
    std::vector<int64_t> result(shape.size(), 1);
    for (std::size_t d = shape.size(); d-- > 1;) result[d - 1] = result[d] * shape[d];
    return result;
  }

  // The expression of a view op (Reshape/Permute/Pad/Truncate/Add) at (r, f), through the
  // accessors of its inputs.
  std::string viewExpression(const ir::Op& op) const {
    const ValueId in = op.inputs[0];
    const std::string source = "v" + std::to_string(in);
    const bool row = info_[op.result].row;
    const int skip = row ? 1 : 0;  // the row axis is never permuted, padded or truncated
    const Shape result = innerShape(op.result);
    const Shape input = innerShape(in);
    const std::vector<int64_t> inStrides = strides(input);
    switch (op.kind) {
      case OpKind::Reshape:  // row-major order is unchanged within a row
        return source + "(r, f)";
      case OpKind::Add:
        return "(" + source + "(r, f) + v" + std::to_string(op.inputs[1]) + "(r, f))";
      case OpKind::Permute: {
        std::string flat = "0LL";
        for (std::size_t k = 0; k < result.size(); ++k)
          flat += " + " + unflatten(result, k, "f") + " * " +
                  num(inStrides[op.perm[k + skip] - skip]);
        return source + "(r, " + flat + ")";
      }
      case OpKind::Pad:
      case OpKind::Truncate: {
        std::string flat = "0LL";
        for (std::size_t k = 0; k < result.size(); ++k)
          flat += " + " + unflatten(result, k, "f") + " * " + num(inStrides[k]);
        const std::string read = source + "(r, " + flat + ")";
        if (op.kind == OpKind::Truncate) return read;
        const std::size_t axis = static_cast<std::size_t>(op.axis - skip);
        return "(" + unflatten(result, axis, "f") + " < " + num(input[axis]) + " ? " + read +
               " : acc_t(0))";
      }
      case OpKind::Contract:
      case OpKind::WeightNorm:
        break;
    }
    throw UserError("internal: no view expression for " + std::string(ir::opKindName(op.kind)));
  }

  // Accessor lambdas v<id>(r, f) for `ids` and every value they read through views, in
  // definition order.
  std::string accessors(const std::set<ValueId>& ids) const {
    std::set<ValueId> needed;
    std::function<void(ValueId)> visit = [&](ValueId id) {
      if (!needed.insert(id).second || info_[id].materialised) return;
      for (ValueId in : p_.ops[info_[id].definingOp].inputs) visit(in);
    };
    for (ValueId id : ids) visit(id);
    std::string code;
    for (ValueId id : needed) {  // ids grow in definition order
      const std::string head = "  auto v" + std::to_string(id) +
                               " = [&](long long r, long long f) -> acc_t { (void)r; return ";
      if (info_[id].materialised)
        code += head + (storedAsStorageType(id) ? "einjit_load(" + storageRef(id) + ")" : storageRef(id)) +
                "; };\n";
      else
        code += head + viewExpression(p_.ops[info_[id].definingOp]) + "; };\n";
    }
    return code;
  }

  std::string store(ValueId id, const std::string& value) const {
    if (storedAsStorageType(id))
      return storageRef(id) + " = einjit_store_" + (options_.precision == Precision::BF16 ? std::string("bf16") : "value") +
             "(" + value + ");";
    return storageRef(id) + " = " + value + ";";
  }

  // Statements that compute element (r, f) of materialised `id` into `acc_t result`. For a
  // row-summed contraction the row label runs over [z0, z1).
  std::string computeElement(ValueId id) const {
    const ir::Op& op = p_.ops[info_[id].definingOp];
    if (op.kind != OpKind::Contract) return "      const acc_t result = " + viewExpression(op) + ";\n";
    const Terms terms = splitEquation(op.equation);
    // Sizes of every label; the row label has none.
    std::map<char, int64_t> size;
    char rowLabel = 0;
    for (std::size_t k = 0; k < terms.inputs.size(); ++k) {
      const Shape& shape = shapeOf(op.inputs[k]);
      for (std::size_t d = 0; d < terms.inputs[k].size(); ++d) {
        const char label = terms.inputs[k][d];
        if (shape[d] == ir::kRows) {
          rowLabel = label;
          continue;
        }
        size[label] = std::max(size[label], shape[d]);
      }
    }
    std::string code;
    const bool rowResult = info_[id].row;
    const Shape result = innerShape(id);
    for (std::size_t d = rowResult ? 1 : 0; d < terms.output.size(); ++d)
      code += "      const long long " + labelVar(terms.output[d]) + " = " +
              unflatten(result, d - (rowResult ? 1 : 0), "f") + ";\n";
    if (rowLabel != 0 && rowResult) code += "      const long long " + labelVar(rowLabel) + " = r;\n";
    code += "      acc_t result = 0;\n";
    std::string indent = "      ";
    int loops = 0;
    if (rowLabel != 0 && !rowResult) {
      code += indent + "for (long long " + labelVar(rowLabel) + " = z0; " + labelVar(rowLabel) +
              " < z1; ++" + labelVar(rowLabel) + ") {\n";
      indent += "  ";
      ++loops;
    }
    std::set<char> reduced;
    for (const std::string& term : terms.inputs)
      for (char label : term)
        if (label != rowLabel && terms.output.find(label) == std::string::npos &&
            reduced.insert(label).second) {
          code += indent + "for (long long " + labelVar(label) + " = 0; " + labelVar(label) + " < " +
                  num(size[label]) + "; ++" + labelVar(label) + ") {\n";
          indent += "  ";
          ++loops;
        }
    std::string product;
    for (std::size_t k = 0; k < terms.inputs.size(); ++k) {
      const ValueId in = op.inputs[k];
      const Shape& shape = shapeOf(in);
      const bool row = info_[in].row;
      const std::vector<int64_t> stride = strides(innerShape(in));
      std::string flat = "0LL";
      for (std::size_t d = row ? 1 : 0; d < shape.size(); ++d) {
        const char label = terms.inputs[k][d];
        if (shape[d] == 1 && (label == rowLabel || size[label] != 1)) continue;  // broadcast: index 0
        flat += " + " + labelVar(label) + " * " + num(stride[d - (row ? 1 : 0)]);
      }
      product += (k ? " * " : "") + std::string("v") + std::to_string(in) + "(" +
                 (row ? labelVar(rowLabel) : "0") + ", " + flat + ")";
    }
    code += indent + "result += " + product + ";\n";
    for (; loops > 0; --loops) {
      indent.resize(indent.size() - 2);
      code += indent + "}\n";
    }
    return code;
  }

  // ---- tiled contractions ----

  // Declarations of the labels of `group` from its flat index `index`; the row label (first
  // when present) is `rowBase` plus the quotient.
  std::string declareGroup(const GemmForm& form, const std::string& group, const std::string& index,
                           const std::string& rowBase, const std::string& indent) const {
    std::string code;
    int64_t stride = 1;
    for (std::size_t d = group.size(); d-- > 0;) {
      const char label = group[d];
      if (label == form.rowLabel) {
        code = indent + "const long long " + labelVar(label) + " = " + rowBase + " + " + index + " / " +
               num(stride) + ";\n" + code;
        continue;
      }
      const int64_t extent = form.size.at(label);
      code = indent + "const long long " + labelVar(label) + " = " + index + " / " + num(stride) + " % " +
             num(extent) + ";\n" + code;
      stride *= extent;
    }
    return code;
  }

  // Flat index of the non-row axes of `id` (labelled by `term`) from the label variables.
  std::string flatIndex(ValueId id, const std::string& term) const {
    const bool row = info_[id].row;
    const std::vector<int64_t> stride = strides(innerShape(id));
    std::string flat = "0LL";
    for (std::size_t d = row ? 1 : 0; d < term.size(); ++d)
      flat += " + " + labelVar(term[d]) + " * " + num(stride[d - (row ? 1 : 0)]);
    return flat;
  }

  std::string operandRead(ValueId in, const std::string& term, char rowLabel) const {
    return "v" + std::to_string(in) + "(" + (info_[in].row ? labelVar(rowLabel) : "0") + ", " +
           flatIndex(in, term) + ")";
  }

  // One output tile (m0, n0) of a tiled contraction: the K loop and the stores. Expects
  // Mt, Nt, Kt, m0, n0, the batch labels, the staging pointers and the thread coordinates;
  // `store` is the statement storing `value` at the output labels (declared before it).
  std::string tiledTile(ValueId id, const GemmForm& form, const Tiling& t, const std::string& mRowBase,
                        const std::string& kRowBase, const std::string& store) const {
    const ir::Op& op = p_.ops[info_[id].definingOp];
    const Terms terms = splitEquation(op.equation);
    const ValueId inA = op.inputs[form.a], inB = op.inputs[form.b];
    const std::string& termA = terms.inputs[form.a];
    const std::string& termB = terms.inputs[form.b];
    // Stage with the operand's innermost axis fastest across threads (coalesced reads).
    const bool aKFastest = form.k.find(termA.back()) != std::string::npos;
    const bool bNFastest = form.n.find(termB.back()) != std::string::npos;
    const std::string bm = std::to_string(t.bm), bn = std::to_string(t.bn), bk = std::to_string(t.bk);
    const std::string I = "        ";
    std::string code;
    auto stage = [&](bool a) {
      const std::string other = a ? bm : bn, otherVar = a ? "mm" : "nn";
      const bool kFastest = a ? aKFastest : !bNFastest;
      std::string loop = I + "for (int s = threadIdx.x; s < " + bk + " * " + other + "; s += " +
                         std::to_string(kTileThreads) + ") {\n";
      if (kFastest)
        loop += I + "  const int kk = s % " + bk + ", " + otherVar + " = s / " + bk + ";\n";
      else
        loop += I + "  const int " + otherVar + " = s % " + other + ", kk = s / " + other + ";\n";
      const std::string outer = a ? "m" : "n";
      loop += I + "  const long long " + outer + " = " + outer + "0 + " + otherVar + ", k = k0 + kk;\n";
      loop += I + "  acc_t value = 0;\n";
      loop += I + "  if (" + outer + " < " + (a ? "Mt" : "Nt") + " && k < Kt) {\n";
      loop += declareGroup(form, a ? form.m : form.n, outer, mRowBase, I + "    ");
      loop += declareGroup(form, form.k, "k", kRowBase, I + "    ");
      loop += I + "    value = " + (a ? operandRead(inA, termA, form.rowLabel) : operandRead(inB, termB, form.rowLabel)) + ";\n";
      loop += I + "  }\n";
      if (t.tensorCores)
        loop += I + "  " + (a ? "tileA[mm * " + std::to_string(t.bk + 8) + " + kk]"
                              : "tileB[kk * " + std::to_string(t.bn + 8) + " + nn]") +
                " = einjit_store_bf16(value);\n";
      else
        loop += I + "  " + (a ? "tileA[kk * " + bm + " + mm]" : "tileB[kk * " + bn + " + nn]") + " = value;\n";
      return loop + I + "}\n";
    };
    const std::string storeAt = I + "  if (m < Mt && n < Nt) {\n" +
                                declareGroup(form, form.m, "m", mRowBase, I + "    ") +
                                declareGroup(form, form.n, "n", "0LL", I + "    ") + store + I + "  }\n";
    if (!t.tensorCores) {
      const std::string tm = std::to_string(t.bm / kThreadGridSide), tn = std::to_string(t.bn / kThreadGridSide);
      code += I + "acc_t acc[" + tm + "][" + tn + "];\n";
      code += I + "for (int i = 0; i < " + tm + "; ++i)\n" + I + "  for (int j = 0; j < " + tn + "; ++j) acc[i][j] = 0;\n";
      code += I + "for (long long k0 = 0; k0 < Kt; k0 += " + bk + ") {\n";
      code += stage(true) + stage(false) + I + "__syncthreads();\n";
      code += I + "for (int kk = 0; kk < " + bk + "; ++kk) {\n";
      code += I + "  acc_t a[" + tm + "], b[" + tn + "];\n";
      code += I + "  for (int i = 0; i < " + tm + "; ++i) a[i] = tileA[kk * " + bm + " + tm + 16 * i];\n";
      code += I + "  for (int j = 0; j < " + tn + "; ++j) b[j] = tileB[kk * " + bn + " + tn + 16 * j];\n";
      code += I + "  for (int i = 0; i < " + tm + "; ++i)\n";
      code += I + "    for (int j = 0; j < " + tn + "; ++j) acc[i][j] += a[i] * b[j];\n";
      code += I + "}\n" + I + "__syncthreads();\n" + I + "}\n";
      code += I + "for (int i = 0; i < " + tm + "; ++i)\n" + I + "for (int j = 0; j < " + tn + "; ++j) {\n";
      code += I + "  const long long m = m0 + tm + 16 * i, n = n0 + tn + 16 * j;\n";
      code += I + "  const acc_t value = acc[i][j];\n";
      return code + storeAt + I + "}\n";
    }
    const int64_t fragsN = t.bn / 16, frags = (t.bm / 16) * fragsN, warps = kTileThreads / 32;
    const int64_t perWarp = ceilDiv(frags, warps);
    const std::string ldA = std::to_string(t.bk + 8), ldB = std::to_string(t.bn + 8), ldC = std::to_string(t.bn + 4);
    const std::string fragLoop = I + "for (int q = 0; q < " + std::to_string(perWarp) + "; ++q) {\n" + I +
                                 "  const int frag = warp + " + std::to_string(warps) + " * q, fm = frag / " +
                                 std::to_string(fragsN) + ", fn = frag % " + std::to_string(fragsN) + ";\n" + I +
                                 "  if (frag < " + std::to_string(frags) + ") {\n";
    code += I + "einjit_frag_c acc[" + std::to_string(perWarp) + "];\n";
    code += I + "for (int q = 0; q < " + std::to_string(perWarp) + "; ++q) einjit_fill_zero(acc[q]);\n";
    code += I + "for (long long k0 = 0; k0 < Kt; k0 += " + bk + ") {\n";
    code += stage(true) + stage(false) + I + "__syncthreads();\n";
    code += fragLoop + I + "    for (int kk = 0; kk < " + bk + "; kk += 16) {\n";
    code += I + "      einjit_frag_a a;\n" + I + "      einjit_frag_b b;\n";
    code += I + "      einjit_load_a(a, tileA + fm * 16 * " + ldA + " + kk, " + ldA + ");\n";
    code += I + "      einjit_load_b(b, tileB + kk * " + ldB + " + fn * 16, " + ldB + ");\n";
    code += I + "      einjit_mma(acc[q], a, b);\n" + I + "    }\n" + I + "  }\n" + I + "}\n";
    code += I + "__syncthreads();\n" + I + "}\n";
    code += fragLoop + I + "    einjit_store_c(tileC + fm * 16 * " + ldC + " + fn * 16, acc[q], " + ldC + ");\n" +
            I + "  }\n" + I + "}\n" + I + "__syncthreads();\n";
    code += I + "for (int s = threadIdx.x; s < " + bm + " * " + bn + "; s += " + std::to_string(kTileThreads) + ") {\n";
    code += I + "  const long long m = m0 + s / " + bn + ", n = n0 + s % " + bn + ";\n";
    code += I + "  const acc_t value = tileC[(s / " + bn + ") * " + ldC + " + s % " + bn + "];\n";
    return code + storeAt + I + "}\n" + I + "__syncthreads();\n";
  }

  // Pointers to the staging tiles at byte offset `offset` of the dynamic shared memory, and the
  // thread's coordinates.
  std::string stagingPointers(const Tiling& t, int64_t offset) const {
    std::string code = "    unsigned char* const stage = einjit_shared + " + num(offset) + ";\n";
    if (t.tensorCores)
      return code + "    unsigned short* const tileA = reinterpret_cast<unsigned short*>(stage);\n" +
             "    unsigned short* const tileB = tileA + " + num(t.bm * (t.bk + 8)) + ";\n" +
             "    float* const tileC = reinterpret_cast<float*>(stage);\n" +
             "    const int warp = threadIdx.x / 32;\n";
    return code + "    acc_t* const tileA = reinterpret_cast<acc_t*>(stage);\n" +
           "    acc_t* const tileB = tileA + " + num(t.bk * t.bm) + ";\n" +
           "    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;\n";
  }

  // A phase of the row tile kernel computing row value `id` as a tiled contraction.
  std::string tiledRowPhase(ValueId id) const {
    const GemmForm& form = gemm_.at(id);
    const Tiling& t = tiling_.at(id);
    const ir::Op& op = p_.ops[info_[id].definingOp];
    const std::string store = "          const long long r = " + labelVar(form.rowLabel) + ", f = " +
                              flatIndex(id, splitEquation(op.equation).output) + ";\n          " +
                              this->store(id, "value") + "\n";
    std::string code = "    // " + op.equation + " as a batched matrix product, tile " + t.describe() + "\n";
    code += stagingPointers(t, stagingOffset_);
    code += "    const long long Mt = tileRows * " + num(form.mStatic) + ", Nt = " + num(form.nSize) +
            ", Kt = " + num(form.kStatic) + ";\n";
    code += "    for (long long bt = 0; bt < " + num(form.batchSize) + "; ++bt) {\n";
    code += declareGroup(form, form.batch, "bt", "0LL", "      ");
    code += "      for (long long m0 = 0; m0 < Mt; m0 += " + num(t.bm) + ")\n";
    code += "      for (long long n0 = 0; n0 < Nt; n0 += " + num(t.bn) + ") {\n";
    code += tiledTile(id, form, t, "0LL", "0LL", store);
    return code + "      }\n    }\n";
  }

  // Row-summed `id` as a tiled contraction with K split over row chunks: one block per
  // (chunk, output tile) writes its partial tile, then a chunk sum adds the partials in chunk
  // order. False when the staging does not fit the shared memory budget.
  bool addTiledRowSumKernels(ValueId id) {
    const GemmForm& form = gemm_.at(id);
    const int64_t bytes = static_cast<int64_t>(accumulatorBytes(options_.precision));
    const Tiling t = chooseTiling(form.batchSize, form.mStatic, form.nSize, kRowsPerChunk * form.kStatic,
                                  options_.precision == Precision::BF16);
    if (t.stagingBytes(bytes) > options_.sharedBytesBudget) return false;
    const int64_t elements = info_[id].perRow;
    const int64_t tilesM = ceilDiv(form.mStatic, t.bm), tilesN = ceilDiv(form.nSize, t.bn);
    const int64_t tiles = form.batchSize * tilesM * tilesN;
    const int64_t maxChunks = std::clamp<int64_t>(
        ceilDiv(kTargetRowSumBlocks, tiles), 1,
        std::min(kMaxChunks, std::max<int64_t>(kChunkSlabElements / std::max<int64_t>(elements, 1), 1)));
    const int slab = static_cast<int>(scratch_.size());
    ScratchBuffer buffer;
    buffer.purpose = "row-chunk partials of " + p_.values[id].name;
    buffer.fixedBytes = maxChunks * elements * bytes;
    scratch_.push_back(buffer);

    const ir::Op& op = p_.ops[info_[id].definingOp];
    Kernel partial;
    partial.launch.kernel = kernelName("rowchunks", id);
    partial.launch.kind = LaunchKind::RowChunks;
    partial.launch.elements = elements;
    partial.launch.maxChunks = maxChunks;
    partial.launch.tilesPerChunk = tiles;
    partial.launch.threads = kTileThreads;
    partial.launch.sharedBytes = t.stagingBytes(bytes);
    partial.launch.tiles = "v" + std::to_string(id) + " " + t.describe();
    partial.preamble = "  const long long row0 = 0; (void)row0;\n"
                       "  const long long chunkRows = (rows + chunks - 1) / chunks;\n" +
                       accessors(readsOf(id));
    const std::string tilesText = num(tiles);
    std::string code = "    // " + op.equation + " summed over rows, tile " + t.describe() + "\n";
    code += stagingPointers(t, 0);
    code += "    for (long long w = blockIdx.x; w < chunks * " + tilesText + "; w += gridDim.x) {\n";
    code += "      const long long chunk = w / " + tilesText + ", tile = w % " + tilesText + ";\n";
    code += "      const long long bt = tile / " + num(tilesM * tilesN) + ";\n";
    code += "      const long long m0 = tile / " + num(tilesN) + " % " + num(tilesM) + " * " + num(t.bm) +
            ", n0 = tile % " + num(tilesN) + " * " + num(t.bn) + ";\n";
    code += declareGroup(form, form.batch, "bt", "0LL", "      ");
    code += "      const long long z0 = chunk * chunkRows;\n";
    code += "      const long long z1 = z0 + chunkRows < rows ? z0 + chunkRows : rows;\n";
    code += "      const long long Mt = " + num(form.mStatic) + ", Nt = " + num(form.nSize) +
            ", Kt = (z1 > z0 ? z1 - z0 : 0LL) * " + num(form.kStatic) + ";\n";
    code += "      {\n";
    code += tiledTile(id, form, t, "0LL", "z0",
                      "          scratch" + std::to_string(slab) + "[chunk * " + num(elements) + " + " +
                          flatIndex(id, splitEquation(op.equation).output) + "] = value;\n");
    code += "      }\n    }\n";
    partial.phases.push_back(code);
    kernels_.push_back(std::move(partial));
    addChunkSumKernel(id, slab);
    return true;
  }

  std::set<ValueId> readsOf(ValueId id) const {
    const ir::Op& op = p_.ops[info_[id].definingOp];
    return std::set<ValueId>(op.inputs.begin(), op.inputs.end());
  }

  std::string kernelName(const std::string& kind, ValueId id) const {
    return "einjit_" + kind + "_" + std::to_string(kernels_.size()) + "_v" + std::to_string(id);
  }

  void addElementKernel(ValueId id) {
    Kernel kernel;
    kernel.launch.kernel = kernelName("elements", id);
    kernel.launch.kind = LaunchKind::Elements;
    kernel.launch.elements = info_[id].perRow;
    kernel.launch.threads = options_.threadsPerBlock;
    kernel.preamble = "  const long long row0 = 0; (void)row0;\n" + accessors(readsOf(id));
    kernel.phases.push_back(
        "    for (long long f = (long long)blockIdx.x * blockDim.x + threadIdx.x; f < " +
        num(info_[id].perRow) + "; f += (long long)gridDim.x * blockDim.x) {\n" +
        "      const long long r = 0; (void)r;\n" + computeElement(id) + "      " +
        store(id, "result") + "\n    }\n");
    kernels_.push_back(std::move(kernel));
  }

  void addRowSumKernels(ValueId id) {
    const int64_t elements = info_[id].perRow;
    const std::string divisor = num(std::max<int64_t>(elements, 1));
    const int slab = static_cast<int>(scratch_.size());
    const int64_t maxChunks = std::clamp<int64_t>(kChunkSlabElements / std::max<int64_t>(elements, 1), 1, kMaxChunks);
    ScratchBuffer buffer;
    buffer.purpose = "row-chunk partials of " + p_.values[id].name;
    buffer.fixedBytes = maxChunks * elements * static_cast<int64_t>(accumulatorBytes(options_.precision));
    scratch_.push_back(buffer);

    Kernel partial;
    partial.launch.kernel = kernelName("rowchunks", id);
    partial.launch.kind = LaunchKind::RowChunks;
    partial.launch.elements = elements;
    partial.launch.maxChunks = maxChunks;
    partial.launch.threads = options_.threadsPerBlock;
    partial.preamble = "  const long long row0 = 0; (void)row0;\n"
                       "  const long long chunkRows = (rows + chunks - 1) / chunks;\n" +
                       accessors(readsOf(id));
    partial.phases.push_back(
        "    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < chunks * " +
        num(elements) + "; i += (long long)gridDim.x * blockDim.x) {\n" +
        "      const long long chunk = i / " + divisor + ", f = i % " + divisor + ";\n" +
        "      const long long z0 = chunk * chunkRows;\n" +
        "      const long long z1 = z0 + chunkRows < rows ? z0 + chunkRows : rows;\n" +
        computeElement(id) + "      scratch" + std::to_string(slab) + "[i] = result;\n    }\n");
    kernels_.push_back(std::move(partial));
    addChunkSumKernel(id, slab);
  }

  // Adds the row-chunk partials of `id` (in scratch `slab`) in chunk order.
  void addChunkSumKernel(ValueId id, int slab) {
    const int64_t elements = info_[id].perRow;
    Kernel sum;
    sum.launch = kernels_.back().launch;
    sum.launch.kernel = kernelName("chunksum", id);
    sum.launch.kind = LaunchKind::ChunkSum;
    sum.launch.tilesPerChunk = 0;
    sum.launch.sharedBytes = 0;
    sum.launch.tiles.clear();
    sum.launch.threads = options_.threadsPerBlock;
    sum.preamble = "  const long long row0 = 0; (void)row0;\n";
    sum.phases.push_back(
        "    for (long long f = (long long)blockIdx.x * blockDim.x + threadIdx.x; f < " + num(elements) +
        "; f += (long long)gridDim.x * blockDim.x) {\n" + "      const long long r = 0; (void)r;\n" +
        "      acc_t result = 0;\n      for (long long chunk = 0; chunk < chunks; ++chunk) result += scratch" +
        std::to_string(slab) + "[chunk * " + num(elements) + " + f];\n      " + store(id, "result") +
        "\n    }\n");
    kernels_.push_back(std::move(sum));
  }

  void addRowTileKernel(const std::vector<ValueId>& values) {
    Kernel kernel;
    kernel.launch.kernel = "einjit_rowtile_" + std::to_string(kernels_.size());
    kernel.launch.kind = LaunchKind::RowTiles;
    kernel.launch.rowsPerTile = rowsPerTile_;
    kernel.launch.threads = options_.threadsPerBlock;
    kernel.launch.sharedBytes = sharedBytes_;
    std::string preamble = "  const long long row0 = (long long)blockIdx.x * " + num(rowsPerTile_) + ";\n" +
                           "  const long long tileRows = rows - row0 < " + num(rowsPerTile_) +
                           " ? rows - row0 : " + num(rowsPerTile_) + ";\n";
    std::set<ValueId> reads;
    for (ValueId id : values) {
      if (info_[id].home == Home::Shared)
        preamble += "  acc_t* const sh" + std::to_string(id) +
                    " = reinterpret_cast<acc_t*>(einjit_shared) + " + num(info_[id].sharedOffset) + ";\n";
      const std::set<ValueId> r = readsOf(id);
      reads.insert(r.begin(), r.end());
    }
    kernel.preamble = preamble + accessors(reads);
    for (ValueId id : values) {
      if (tiling_.count(id)) {
        kernel.launch.tiles += (kernel.launch.tiles.empty() ? "v" : ", v") + std::to_string(id) + " " +
                               tiling_.at(id).describe();
        kernel.phases.push_back(tiledRowPhase(id));
        continue;
      }
      const int64_t perRow = info_[id].perRow;
      const std::string divisor = num(std::max<int64_t>(perRow, 1));
      kernel.phases.push_back("    for (long long i = threadIdx.x; i < tileRows * " + num(perRow) +
                              "; i += blockDim.x) {\n" + "      const long long r = i / " + divisor +
                              ", f = i % " + divisor + ";\n" + computeElement(id) + "      " +
                              store(id, "result") + "\n    }\n");
    }
    kernels_.push_back(std::move(kernel));
  }

  // ---- rendering ----

  std::string arguments() const {
    std::string args = "long long rows, long long chunks";
    for (std::size_t k = 0; k < p_.inputs.size(); ++k) args += ", const storage_t* __restrict__ in" + std::to_string(k);
    for (std::size_t k = 0; k < p_.outputs.size(); ++k) args += ", storage_t* __restrict__ out" + std::to_string(k);
    for (std::size_t k = 0; k < scratch_.size(); ++k) args += ", acc_t* __restrict__ scratch" + std::to_string(k);
    return args;
  }

  std::string prelude(Flavour flavour) const {
    std::string text = "// " + std::string(kCodegenVersion) + ": kernel program '" + p_.name + "', " +
                       precisionName(options_.precision) + " storage\n";
    if (flavour == Flavour::Cuda) {
      text +=
          "#define EINJIT_FN __device__ __forceinline__\n"
          "EINJIT_FN float einjit_bits_to_float(unsigned u) { return __uint_as_float(u); }\n"
          "EINJIT_FN unsigned einjit_float_to_bits(float x) { return __float_as_uint(x); }\n";
    } else {
      text += kHostSimulationPrelude;
    }
    const bool f64 = options_.precision == Precision::F64;
    text += "typedef " + storageType() + " storage_t;\n";
    text += std::string("typedef ") + (f64 ? "double" : "float") + " acc_t;\n";
    text +=
        "EINJIT_FN acc_t einjit_load(float x) { return x; }\n"
        "EINJIT_FN acc_t einjit_load(double x) { return (acc_t)x; }\n"
        "EINJIT_FN acc_t einjit_load(unsigned short b) { return einjit_bits_to_float((unsigned)b << 16); }\n"
        "EINJIT_FN storage_t einjit_store_value(acc_t x) { return (storage_t)x; }\n"
        "// bfloat16: round to nearest even; NaN stays NaN.\n"
        "EINJIT_FN unsigned short einjit_store_bf16(float x) {\n"
        "  unsigned u = einjit_float_to_bits(x);\n"
        "  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);\n"
        "  u += 0x7fffu + ((u >> 16) & 1u);\n"
        "  return (unsigned short)(u >> 16);\n"
        "}\n";
    if (options_.precision == Precision::BF16)
      text += flavour == Flavour::Cuda ? kWmmaDevice : kWmmaHost;
    return text;
  }

  static std::string kernelBody(const Kernel& kernel) {
    std::string text = kernel.preamble;
    for (std::size_t k = 0; k < kernel.phases.size(); ++k) {
      if (k > 0) text += "  __syncthreads();\n";
      text += "  {\n" + kernel.phases[k] + "  }\n";
    }
    return text;
  }

  std::string renderKernel(const Kernel& kernel, Flavour flavour) const {
    std::string text = "\n// " + std::string(launchKindName(kernel.launch.kind)) + " kernel\n";
    if (flavour == Flavour::Cuda) {
      text += "extern \"C\" __global__ void __launch_bounds__(" + std::to_string(kernel.launch.threads) + ") " +
              kernel.launch.kernel + "(" + arguments() + ") {\n";
      text += "  extern __shared__ __align__(128) unsigned char einjit_shared[];\n  (void)einjit_shared;\n";
      return text + kernelBody(kernel) + "}\n";
    }
    // Every simulated thread runs the very body as a fiber (einjit_sim_block, in the prelude).
    text += "extern \"C\" void " + kernel.launch.kernel + "(" + arguments() +
            ", unsigned grid, unsigned block, unsigned char* einjit_shared) {\n";
    text += "  gridDim.x = grid; blockDim.x = block;\n";
    text += "  for (blockIdx.x = 0; blockIdx.x < grid && !einjit_sim_problem(); ++blockIdx.x)\n";
    text += "    einjit_sim_block(block, [&] {\n" + kernelBody(kernel) + "    });\n}\n";
    // The same kernel with its buffers in an array, so a host caller needs one signature.
    text += "extern \"C\" void " + kernel.launch.kernel +
            "_packed(long long rows, long long chunks, void* const* b, unsigned grid, unsigned block, "
            "unsigned char* shared) {\n  " + kernel.launch.kernel + "(rows, chunks";
    std::size_t index = 0;
    for (std::size_t k = 0; k < p_.inputs.size(); ++k) text += ", (const storage_t*)b[" + std::to_string(index++) + "]";
    for (std::size_t k = 0; k < p_.outputs.size(); ++k) text += ", (storage_t*)b[" + std::to_string(index++) + "]";
    for (std::size_t k = 0; k < scratch_.size(); ++k) text += ", (acc_t*)b[" + std::to_string(index++) + "]";
    return text + ", grid, block, shared);\n}\n";
  }

  const KernelProgram& p_;
  EmitOptions options_;
  std::vector<ValueInfo> info_;
  std::vector<ScratchBuffer> scratch_;
  std::vector<Kernel> kernels_;
  std::map<ValueId, GemmForm> gemm_;   // contractions that are batched matrix products
  std::map<ValueId, Tiling> tiling_;   // row values computed as tiled contractions
  int64_t rowsPerTile_ = kMaxRowsPerTile;
  int64_t sharedBytes_ = 0;
  int64_t stagingOffset_ = 0;  // bytes: the row tile kernel's staging tiles, after the intermediates
};

}  // namespace

const char* precisionName(Precision precision) {
  switch (precision) {
    case Precision::F32: return "f32";
    case Precision::F64: return "f64";
    case Precision::BF16: return "bf16";
  }
  return "?";
}

Precision parsePrecision(const std::string& name) {
  if (name == "f32" || name == "float32") return Precision::F32;
  if (name == "f64" || name == "float64") return Precision::F64;
  if (name == "bf16" || name == "bfloat16") return Precision::BF16;
  throw UserError("unknown precision '" + name + "' (expected f32, f64 or bf16)");
}

std::size_t storageBytes(Precision precision) {
  return precision == Precision::F64 ? 8 : precision == Precision::F32 ? 4 : 2;
}

std::size_t accumulatorBytes(Precision precision) { return precision == Precision::F64 ? 8 : 4; }

const char* launchKindName(LaunchKind kind) {
  switch (kind) {
    case LaunchKind::Elements: return "elements";
    case LaunchKind::RowTiles: return "row tiles";
    case LaunchKind::RowChunks: return "row chunks";
    case LaunchKind::ChunkSum: return "chunk sum";
  }
  return "?";
}

std::string CudaProgram::launchPlan() const {
  std::string text;
  for (const KernelLaunch& launch : launches) {
    text += launch.kernel + ": " + launchKindName(launch.kind);
    if (launch.kind == LaunchKind::RowTiles)
      text += ", " + std::to_string(launch.rowsPerTile) + " rows per block, " +
              std::to_string(launch.sharedBytes) + " bytes of shared memory";
    else
      text += ", " + std::to_string(launch.elements) + " elements";
    if (launch.kind == LaunchKind::RowChunks) {
      text += ", up to " + std::to_string(launch.maxChunks) + " row chunks";
      if (launch.tilesPerChunk > 0)
        text += " of " + std::to_string(launch.tilesPerChunk) + " tiles, " + std::to_string(launch.sharedBytes) +
                " bytes of shared memory";
    }
    if (!launch.tiles.empty()) text += ", tiles " + launch.tiles;
    text += ", " + std::to_string(launch.threads) + " threads\n";
  }
  return text;
}

int64_t chunkCount(const KernelLaunch& launch, int64_t rows) {
  return std::clamp<int64_t>((rows + kRowsPerChunk - 1) / kRowsPerChunk, 1, launch.maxChunks);
}

int64_t gridBlocks(const KernelLaunch& launch, int64_t rows) {
  const int64_t threads = launch.threads;
  auto spread = [&](int64_t work) { return std::min<int64_t>((work + threads - 1) / threads, kMaxGridBlocks); };
  switch (launch.kind) {
    case LaunchKind::Elements:
    case LaunchKind::ChunkSum:
      return spread(launch.elements);
    case LaunchKind::RowTiles:
      return (rows + launch.rowsPerTile - 1) / launch.rowsPerTile;
    case LaunchKind::RowChunks:
      if (launch.tilesPerChunk > 0)
        return std::min<int64_t>(chunkCount(launch, rows) * launch.tilesPerChunk, kMaxGridBlocks);
      return spread(chunkCount(launch, rows) * launch.elements);
  }
  return 0;
}

void forEachLaunch(const CudaProgram& program, int64_t rows,
                   const std::function<void(std::size_t k, unsigned grid, long long chunks)>& launch) {
  for (std::size_t k = 0; k < program.launches.size(); ++k) {
    const int64_t grid = gridBlocks(program.launches[k], rows);
    if (grid == 0) continue;
    if (grid > 0x7fffffff)
      throw UserError(program.name + ": " + std::to_string(rows) + " rows need more blocks than CUDA allows");
    launch(k, static_cast<unsigned>(grid), chunkCount(program.launches[k], rows));
  }
}

CudaProgram emitCuda(const KernelProgram& program, const EmitOptions& options) {
  return Emitter(program, options).render(Flavour::Cuda);
}

std::string emitHostSimulation(const KernelProgram& program, const EmitOptions& options) {
  return Emitter(program, options).render(Flavour::Host).source;
}

}  // namespace einjit::cuda
