#include "tools/LayerReport.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace einjit::cli {

namespace {

std::string shapeText(const Shape& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += shape[i] == ir::kRows ? "N" : std::to_string(shape[i]);
  }
  return s + (shape.size() == 1 ? ",)" : ")");
}

std::string valueRef(const ir::LayerProgram& program, ir::ValueId id) {
  return "%" + program.values.at(id).name;
}

// One line of the program listing: "%t = contract 'zi,ir->zr' (%x, %U)   MACs/row 512".
std::string opLine(const ir::LayerProgram& program, const ir::Op& op) {
  std::string args;
  for (std::size_t i = 0; i < op.inputs.size(); ++i)
    args += (i ? ", " : "") + valueRef(program, op.inputs[i]);
  std::string detail;
  switch (op.kind) {
    case ir::OpKind::Contract:
      detail = fmt::format("'{}' ({})", op.equation, args);
      break;
    case ir::OpKind::Reshape:
      detail = fmt::format("{} to {}", args, shapeText(op.shape));
      break;
    case ir::OpKind::Permute:
      detail = fmt::format("{} by [{}]", args, fmt::join(op.perm, ","));
      break;
    case ir::OpKind::Pad:
    case ir::OpKind::Truncate:
      detail = fmt::format("{} axis {} to {}", args, op.axis, op.size);
      break;
    case ir::OpKind::WeightNorm:
      detail = fmt::format("({}) sigma {:.4g} eps {:g}", args, op.normSigma, op.normEps);
      break;
    case ir::OpKind::Add:
      detail = args;
      break;
  }
  std::string line = fmt::format("  {} = {} {}", valueRef(program, op.result), ir::opKindName(op.kind), detail);
  const Shape& shape = program.values.at(op.result).shape;
  line = fmt::format("{:<60} : {}", line, shapeText(shape));
  if (op.kind == ir::OpKind::Contract)
    line += fmt::format("   MACs/row {}", ir::contractionMacsPerRow(program, op));
  return line;
}

}  // namespace

std::string layerTable(const ir::LayerProgram& program) {
  std::string out;
  out += fmt::format("spec        {}\n", program.spec);
  out += fmt::format("structure   {}   {} -> {}\n", program.structure, program.dIn, program.dOut);
  if (!program.attributes.empty()) {
    out += "sizes      ";
    for (const auto& [key, value] : program.attributes) out += fmt::format(" {}={}", key, value);
    out += "\n";
  }
  const double denseMacs = static_cast<double>(program.dIn) * static_cast<double>(program.dOut);
  out += fmt::format("params      {}\n", program.paramCount());
  out += fmt::format("MACs/row    {}   ({:.4g}x fewer than dense {})\n", program.macsPerRow(),
                     denseMacs / static_cast<double>(std::max<int64_t>(1, program.macsPerRow())),
                     static_cast<int64_t>(denseMacs));
  if (program.taxonomy)
    out += fmt::format("taxonomy    omega={:.4g} psi={:.4g} nu={:.4g}\n", program.taxonomy->omega,
                       program.taxonomy->psi, program.taxonomy->nu);
  out += "parameters (muP):\n";
  out += fmt::format("  {:<10} {:<22} {:>10} {:>8} {:>8} {:>11} {:>10} {:>3} {}\n", "name", "shape",
                     "numel", "d_in_f", "d_out_f", "init std", "lr mult", "wd", "zero-init");
  for (const ir::Parameter& p : program.params) {
    std::string init = p.isScalarGain ? "1 (gain)" : fmt::format("{:.5g}", p.initStd);
    out += fmt::format("  {:<10} {:<22} {:>10} {:>8} {:>8} {:>11} {:>10.5g} {:>3} {}\n", p.name,
                       shapeText(p.shape), shapeNumel(p.shape), p.factorIn, p.factorOut, init,
                       p.lrMult, p.weightDecay ? "yes" : "no",
                       p.zeroInitIfResidual ? "if residual" : "");
  }
  out += "program (contraction plan):\n";
  out += fmt::format("  {:<58} : {}\n", "%" + program.values.at(program.input).name + " = input",
                     shapeText(program.values.at(program.input).shape));
  for (const ir::Op& op : program.ops) out += opLine(program, op) + "\n";
  out += fmt::format("  return {}\n", valueRef(program, program.output));
  return out;
}

nlohmann::json layerJson(const ir::LayerProgram& program) {
  using nlohmann::json;
  auto shapeJson = [](const Shape& shape) {
    json j = json::array();
    for (int64_t d : shape) j.push_back(d == ir::kRows ? json("N") : json(d));
    return j;
  };
  json j;
  j["spec"] = program.spec;
  j["structure"] = program.structure;
  j["in"] = program.dIn;
  j["out"] = program.dOut;
  j["params"] = program.paramCount();
  j["macs_per_row"] = program.macsPerRow();
  j["attributes"] = json::object();
  for (const auto& [key, value] : program.attributes) j["attributes"][key] = value;
  if (program.taxonomy)
    j["taxonomy"] = {{"omega", program.taxonomy->omega},
                     {"psi", program.taxonomy->psi},
                     {"nu", program.taxonomy->nu}};
  j["parameters"] = json::array();
  for (const ir::Parameter& p : program.params)
    j["parameters"].push_back({{"name", p.name},
                               {"shape", shapeJson(p.shape)},
                               {"numel", shapeNumel(p.shape)},
                               {"d_in_f", p.factorIn},
                               {"d_out_f", p.factorOut},
                               {"init_std", p.initStd},
                               {"lr_mult", p.lrMult},
                               {"weight_decay", p.weightDecay},
                               {"scalar_gain", p.isScalarGain},
                               {"zero_init_if_residual", p.zeroInitIfResidual}});
  j["values"] = json::array();
  for (const ir::Value& v : program.values)
    j["values"].push_back({{"name", v.name}, {"shape", shapeJson(v.shape)}});
  j["input"] = program.values.at(program.input).name;
  j["output"] = program.values.at(program.output).name;
  j["ops"] = json::array();
  for (const ir::Op& op : program.ops) {
    json o = {{"op", ir::opKindName(op.kind)}, {"result", program.values.at(op.result).name}};
    o["inputs"] = json::array();
    for (ir::ValueId id : op.inputs) o["inputs"].push_back(program.values.at(id).name);
    switch (op.kind) {
      case ir::OpKind::Contract:
        o["equation"] = op.equation;
        o["macs_per_row"] = ir::contractionMacsPerRow(program, op);
        break;
      case ir::OpKind::Reshape: o["shape"] = shapeJson(op.shape); break;
      case ir::OpKind::Permute: o["perm"] = op.perm; break;
      case ir::OpKind::Pad:
      case ir::OpKind::Truncate:
        o["axis"] = op.axis;
        o["size"] = op.size;
        break;
      case ir::OpKind::WeightNorm:
        o["sigma"] = op.normSigma;
        o["eps"] = op.normEps;
        break;
      case ir::OpKind::Add:
        break;
    }
    j["ops"].push_back(o);
  }
  return j;
}

}  // namespace einjit::cli
