#include "compiler/cuda/CudaEmitter.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "einjit/error.h"

namespace einjit::cuda {
namespace {

using ir::OpKind;
using ir::ValueId;

// Bumped whenever the generated code changes for the same program; part of cache keys through
// the source text's header.
constexpr const char* kCodegenVersion = "einjit-cuda-codegen 1";
constexpr int64_t kMaxRowsPerTile = 64;
constexpr int64_t kMinRowsPerTile = 4;
// Upper bound on partial results per row-summed value: chunks x elements stays below this.
constexpr int64_t kChunkSlabElements = int64_t{1} << 24;
constexpr int64_t kMaxChunks = 256;
constexpr int64_t kRowsPerChunk = 128;
constexpr int64_t kMaxGridBlocks = 65535;

std::string num(int64_t value) { return std::to_string(value) + "LL"; }

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

  // Rows per tile: as many (up to kMaxRowsPerTile, a power of two) as let the tile's
  // intermediates fit the shared memory budget; the largest intermediates move to global
  // scratch until at least kMinRowsPerTile rows fit.
  void chooseRowTile(std::vector<ValueId> candidates) {
    const int64_t bytes = static_cast<int64_t>(accumulatorBytes(options_.precision));
    auto perRowBytes = [&] {
      int64_t total = 0;
      for (ValueId id : candidates) total += info_[id].perRow * bytes;
      return total;
    };
    for (;;) {
      const int64_t perRow = perRowBytes();
      rowsPerTile_ = kMaxRowsPerTile;
      while (rowsPerTile_ > 1 && rowsPerTile_ * perRow > options_.sharedBytesBudget) rowsPerTile_ /= 2;
      if (rowsPerTile_ * perRow <= options_.sharedBytesBudget && rowsPerTile_ >= kMinRowsPerTile)
        break;
      auto largest = std::max_element(candidates.begin(), candidates.end(), [&](ValueId a, ValueId b) {
        return info_[a].perRow < info_[b].perRow;
      });
      info_[*largest].home = Home::GlobalScratch;
      candidates.erase(largest);
    }
    int64_t offset = 0;
    for (ValueId id : candidates) {
      info_[id].home = Home::Shared;
      info_[id].sharedOffset = offset;
      offset += info_[id].perRow * rowsPerTile_;
    }
    sharedBytes_ = offset * bytes;
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

    Kernel sum;
    sum.launch = kernels_.back().launch;
    sum.launch.kernel = kernelName("chunksum", id);
    sum.launch.kind = LaunchKind::ChunkSum;
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
      text +=
          "#include <cstring>\n"
          "#define __restrict__\n"
          "#define EINJIT_FN static inline\n"
          "struct einjit_dim { unsigned x = 0; };\n"
          "static einjit_dim blockIdx, threadIdx, blockDim, gridDim;\n"
          "EINJIT_FN float einjit_bits_to_float(unsigned u) { float x; std::memcpy(&x, &u, 4); return x; }\n"
          "EINJIT_FN unsigned einjit_float_to_bits(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }\n";
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
    return text;
  }

  std::string renderKernel(const Kernel& kernel, Flavour flavour) const {
    std::string text = "\n// " + std::string(launchKindName(kernel.launch.kind)) + " kernel\n";
    if (flavour == Flavour::Cuda) {
      text += "extern \"C\" __global__ void __launch_bounds__(" + std::to_string(kernel.launch.threads) + ") " +
              kernel.launch.kernel + "(" + arguments() + ") {\n";
      text += "  extern __shared__ __align__(16) unsigned char einjit_shared[];\n  (void)einjit_shared;\n";
      text += kernel.preamble;
      for (std::size_t k = 0; k < kernel.phases.size(); ++k) {
        if (k > 0) text += "  __syncthreads();\n";
        text += "  {\n" + kernel.phases[k] + "  }\n";
      }
      return text + "}\n";
    }
    text += "extern \"C\" void " + kernel.launch.kernel + "(" + arguments() +
            ", unsigned grid, unsigned block, unsigned char* einjit_shared) {\n";
    text += "  gridDim.x = grid; blockDim.x = block;\n";
    text += "  for (blockIdx.x = 0; blockIdx.x < grid; ++blockIdx.x) {\n";
    text += kernel.preamble;
    for (const std::string& phase : kernel.phases)
      text += "  for (threadIdx.x = 0; threadIdx.x < block; ++threadIdx.x) {\n" + phase + "  }\n";
    text += "  }\n}\n";
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
  int64_t rowsPerTile_ = kMaxRowsPerTile;
  int64_t sharedBytes_ = 0;
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
    if (launch.kind == LaunchKind::RowChunks) text += ", up to " + std::to_string(launch.maxChunks) + " row chunks";
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
      return spread(chunkCount(launch, rows) * launch.elements);
  }
  return 0;
}

CudaProgram emitCuda(const KernelProgram& program, const EmitOptions& options) {
  return Emitter(program, options).render(Flavour::Cuda);
}

std::string emitHostSimulation(const KernelProgram& program, const EmitOptions& options) {
  return Emitter(program, options).render(Flavour::Host).source;
}

}  // namespace einjit::cuda
