// Argument checking and dispatch: a parsed StructureSpec becomes a LayerProgram.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

#include "frontend/structures/LayerBuilder.h"
#include "frontend/structures/Structures.h"

namespace einjit {

namespace {

using structures::NormKind;

// Widths, ranks and block counts are capped so that factorisation (trial division) stays fast;
// products of sizes are checked separately (SizeOverflow).
constexpr int64_t kMaxSize = int64_t{1} << 40;
// The c-core builders give every factor and rank axis its own einsum letter.
constexpr int64_t kMaxCores = 16;

// The keys a structure accepts: in, out, its own, norm, gain, base.
std::vector<std::string> keysFor(const std::string& structure) {
  std::vector<std::string> keys = {"in", "out"};
  if (structure == "lowrank") keys.insert(keys.end(), {"rank"});
  if (structure == "kron") keys.insert(keys.end(), {"factors"});
  if (structure == "tt" || structure == "btt") keys.insert(keys.end(), {"rank", "cores"});
  if (structure == "monarch") keys.insert(keys.end(), {"blocks"});
  if (structure == "theta")
    keys.insert(keys.end(), {"alpha", "beta", "gamma", "delta", "epsilon", "phi", "rho"});
  keys.insert(keys.end(), {"norm", "gain", "base"});
  return keys;
}

std::string joinKeys(const std::vector<std::string>& keys) {
  std::string text;
  for (const std::string& key : keys) text += (text.empty() ? "" : ", ") + key;
  return text;
}

// The arguments of one spec, checked against the keys its structure accepts.
class Arguments {
 public:
  explicit Arguments(const StructureSpec& spec) : spec_(spec) {
    const std::vector<std::string> valid = keysFor(spec.name);
    for (std::size_t k = 0; k < spec.args.size(); ++k) {
      const StructureArg& arg = spec.args[k];
      if (std::find(valid.begin(), valid.end(), arg.key) == valid.end()) {
        std::string message = "unknown argument '" + arg.key + "' for " + spec.name;
        if (const auto nearest = structures::nearestName(arg.key, valid))
          message += "; did you mean '" + *nearest + "'?";
        throw SpecError(spec.source, arg.keyLoc,
                        message + " (valid arguments: " + joinKeys(valid) + ")");
      }
      for (std::size_t j = 0; j < k; ++j)
        if (spec.args[j].key == arg.key)
          throw SpecError(spec.source, arg.keyLoc,
                          "duplicate argument '" + arg.key + "' (first given at line " +
                              std::to_string(spec.args[j].keyLoc.line) + ", column " +
                              std::to_string(spec.args[j].keyLoc.column) + ")");
    }
  }

  const StructureArg* find(const std::string& key) const {
    for (const StructureArg& arg : spec_.args)
      if (arg.key == key) return &arg;
    return nullptr;
  }

  [[noreturn]] void failAt(SourceLoc loc, const std::string& message) const {
    throw SpecError(spec_.source, loc, message);
  }

  // An integer in [min, max]; `what` describes the accepted values for messages.
  std::optional<int64_t> integer(const std::string& key, int64_t min, int64_t max,
                                 const std::string& what) const {
    const StructureArg* arg = find(key);
    if (!arg) return std::nullopt;
    const std::string& text = arg->value;
    const std::size_t start = (!text.empty() && text[0] == '+') ? 1 : 0;
    int64_t value = 0;
    const auto [end, error] = std::from_chars(text.data() + start, text.data() + text.size(), value);
    if (end != text.data() + text.size() || start == text.size() ||
        (error != std::errc() && error != std::errc::result_out_of_range))
      failAt(arg->valueLoc, "expected " + what + " for '" + key + "', found '" + text + "'");
    const bool negative = text[0] == '-';
    if ((error == std::errc::result_out_of_range && !negative) || value > max)
      failAt(arg->valueLoc, "'" + key + "' = " + text + " is too large: at most " +
                                std::to_string(max));
    if (error == std::errc::result_out_of_range || value < min)
      failAt(arg->valueLoc, "expected " + what + " for '" + key + "', found " + text);
    return value;
  }

  std::optional<int64_t> size(const std::string& key) const {
    return integer(key, 1, kMaxSize, "a positive integer");
  }

  std::optional<double> unitInterval(const std::string& key) const {
    const StructureArg* arg = find(key);
    if (!arg) return std::nullopt;
    const std::string& text = arg->value;
    const std::size_t start = (!text.empty() && text[0] == '+') ? 1 : 0;
    double value = 0;
    const auto [end, error] = std::from_chars(text.data() + start, text.data() + text.size(), value);
    const bool isNumber = error == std::errc() && end == text.data() + text.size() &&
                          std::isfinite(value) && start < text.size();
    if (!isNumber || value < 0 || value > 1)
      failAt(arg->valueLoc, "expected a number in [0, 1] for '" + key + "', found '" + text + "'");
    return value;
  }

  bool flag(const std::string& key) const {
    const StructureArg* arg = find(key);
    if (!arg) return false;
    if (arg->value == "true") return true;
    if (arg->value == "false") return false;
    failAt(arg->valueLoc, "expected true or false for '" + key + "', found '" + arg->value + "'");
  }

 private:
  const StructureSpec& spec_;
};

int64_t resolveWidth(std::optional<int64_t> override, std::optional<int64_t> fromSpec,
                     const StructureSpec& spec, const std::string& key, const std::string& what) {
  if (override) {
    if (*override < 1 || *override > kMaxSize)
      throw UserError("the " + what + " of a " + spec.name + " layer must be in [1, " +
                      std::to_string(kMaxSize) + "], got " + std::to_string(*override));
    return *override;
  }
  if (fromSpec) return *fromSpec;
  throw SpecError(spec.source, spec.nameLoc,
                  "missing '" + key + "' (the " + what + "): expected " + key + "=<width> in " +
                      spec.name + "(...)");
}

// "btt(in=1024, out=1024, rank=4)": resolved widths first, then the other arguments as written.
std::string normalisedSpec(const StructureSpec& spec, int64_t dIn, int64_t dOut) {
  std::string text = spec.name + "(in=" + std::to_string(dIn) + ", out=" + std::to_string(dOut);
  for (const StructureArg& arg : spec.args) {
    if (arg.key == "in" || arg.key == "out") continue;
    text += ", " + arg.key;
    if (arg.value != "true") text += "=" + arg.value;
  }
  return text + ")";
}

std::string formatNumber(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", value);
  return text;
}

structures::Theta readTheta(const Arguments& args, const StructureSpec& spec) {
  structures::Theta theta;
  const std::vector<std::pair<std::string, double*>> fields = {
      {"alpha", &theta.alpha}, {"beta", &theta.beta}, {"gamma", &theta.gamma},
      {"delta", &theta.delta}, {"epsilon", &theta.epsilon}, {"phi", &theta.phi},
      {"rho", &theta.rho}};
  for (const auto& [key, field] : fields) {
    const std::optional<double> value = args.unitInterval(key);
    if (!value)
      throw SpecError(spec.source, spec.nameLoc,
                      "missing '" + key + "': theta needs all of alpha, beta, gamma, delta, "
                      "epsilon, phi, rho");
    *field = *value;
  }
  auto checkSum = [&](const std::string& first, double sum, const std::string& what) {
    if (std::abs(sum - 1) > 0.01 + 1e-12)
      args.failAt(args.find(first)->keyLoc,
                  what + " must be 1 (within 0.01), got " + formatNumber(sum));
  };
  checkSum("alpha", theta.alpha + theta.beta + theta.gamma, "alpha + beta + gamma");
  checkSum("delta", theta.delta + theta.epsilon + theta.phi, "delta + epsilon + phi");
  return theta;
}

ir::LayerProgram build(const StructureSpec& spec, std::optional<int64_t> dInOverride,
                       std::optional<int64_t> dOutOverride) {
  const Arguments args(spec);
  ir::LayerProgram program;
  program.structure = spec.name;
  program.dIn = resolveWidth(dInOverride, args.size("in"), spec, "in", "input width");
  program.dOut = resolveWidth(dOutOverride, args.size("out"), spec, "out", "output width");
  program.spec = normalisedSpec(spec, program.dIn, program.dOut);
  const bool norm = args.flag("norm");
  // gain=false: btt_norm without the learnable gains (the reference's W_Q and W_K under
  // QK-LayerNorm, whose LayerNorms would undo any gain); theta points off the BTT route
  // (einsum_norm) have none anyway.
  if (const StructureArg* gain = args.find("gain"); gain && !norm)
    args.failAt(gain->keyLoc, "'gain' applies to weight normalisation; add 'norm' or drop 'gain'");
  const bool gains = !args.find("gain") || args.flag("gain");
  const NormKind kind = !norm ? NormKind::None : gains ? NormKind::BttNorm : NormKind::BttNormWithoutGain;
  const std::optional<int64_t> base = args.size("base");
  const std::string coresText = "an integer in [2, " + std::to_string(kMaxCores) + "]";

  if (spec.name == "dense") {
    structures::buildDense(program, kind);
  } else if (spec.name == "lowrank") {
    const int64_t defaultRank =
        static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(std::min(program.dIn, program.dOut)))));
    structures::buildLowRank(program, kind, args.size("rank").value_or(defaultRank));
  } else if (spec.name == "kron") {
    const int64_t factors = args.integer("factors", 2, kMaxCores, coresText).value_or(2);
    structures::buildKronecker(program, kind, static_cast<int>(factors));
  } else if (spec.name == "tt" || spec.name == "btt") {
    const int64_t rank = args.size("rank").value_or(1);
    const int cores = static_cast<int>(args.integer("cores", 2, kMaxCores, coresText).value_or(2));
    if (spec.name == "tt")
      structures::buildTensorTrain(program, kind, rank, cores);
    else
      structures::buildBtt(program, kind, rank, cores);
  } else if (spec.name == "monarch") {
    int64_t blocks = 4;
    if (args.find("blocks")) {
      blocks = *args.integer("blocks", -1, kMaxSize, "a positive integer or -1");
      if (blocks == 0)
        args.failAt(args.find("blocks")->valueLoc,
                    "expected a positive integer or -1 for 'blocks', found 0");
    }
    // b = -1: ceil(sqrt(d_in)), computed exactly (no floating-point rounding).
    if (blocks == -1) {
      blocks = 1;
      while (blocks * blocks < program.dIn) ++blocks;
    }
    structures::buildMonarch(program, kind, blocks);
  } else if (spec.name == "theta") {
    const structures::Theta theta = readTheta(args, spec);
    const structures::ThetaSizes sizes = structures::thetaSizes(theta, program.dIn, program.dOut);
    auto checkMismatch = [&](int64_t product, int64_t width, const std::string& what) {
      if (std::abs(static_cast<double>(product - width)) > 0.15 * static_cast<double>(width))
        throw SpecError(spec.source, spec.nameLoc,
                        "the rounded theta sizes give " + what + " = " + std::to_string(product) +
                            ", more than 15% away from " + std::to_string(width));
    };
    checkMismatch(structures::checkedProduct({sizes.g, sizes.b, sizes.a}), program.dIn, "g*b*a (for in)");
    checkMismatch(structures::checkedProduct({sizes.f, sizes.e, sizes.d}), program.dOut, "f*e*d (for out)");
    structures::buildTheta(program, norm, gains, theta, sizes);
  }
  if (base) program.attributes.emplace_back("base", std::to_string(*base));
  applyMup(program, base.value_or(0));
  return program;
}

}  // namespace

ir::LayerProgram buildLayer(const StructureSpec& spec, std::optional<int64_t> dIn,
                            std::optional<int64_t> dOut) {
  try {
    return build(spec, dIn, dOut);
  } catch (const structures::SizeOverflow&) {
    throw SpecError(spec.source, spec.nameLoc,
                    "the layer is too large: its parameter count or MACs per row overflow int64");
  }
}

ir::LayerProgram buildLayer(const std::string& spec) { return buildLayer(parseStructureSpec(spec)); }

}  // namespace einjit
