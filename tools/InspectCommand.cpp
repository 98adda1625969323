// einjit inspect SPEC [--json]: what a structured layer (or a classic einsum) costs and how it
// will be computed.
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "compiler/planner/ContractionPlan.h"
#include "frontend/einsum/BoundEinsum.h"
#include "frontend/structures/Structures.h"
#include "tools/Commands.h"
#include "tools/LayerReport.h"
#include "tools/ShapeList.h"

namespace einjit::cli {

namespace {

struct InspectOptions {
  std::string spec;
  std::string shapes;
  bool json = false;
};

// A structure spec has a name followed by '('; a classic einsum never contains '('.
bool isStructureSpec(const std::string& spec) { return spec.find('(') != std::string::npos; }

void inspectEinsum(const InspectOptions& options) {
  if (options.shapes.empty())
    throw UserError("inspecting a classic einsum needs the operand shapes: --shapes 2x3,3x4");
  BoundEinsum einsum = bindEinsum(parseEinsum(options.spec), parseShapeList(options.shapes));
  ContractionPlan plan = planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
  if (options.json) {
    nlohmann::json j;
    j["einsum"] = einsum.canonical();
    j["output_shape"] = einsum.outputShape;
    j["labels"] = nlohmann::json::object();
    for (int l = 0; l < einsum.numLabels(); ++l) j["labels"][einsum.labelName[l]] = einsum.labelSize[l];
    j["plan"] = {{"method", plan.method},
                 {"total_macs", plan.totalMacs},
                 {"largest_intermediate", plan.largestIntermediate}};
    j["plan"]["steps"] = nlohmann::json::array();
    for (const ContractionStep& s : plan.steps)
      j["plan"]["steps"].push_back({{"lhs", s.lhs},
                                    {"rhs", s.rhs},
                                    {"result_labels", s.resultLabels},
                                    {"macs", s.macs},
                                    {"result_size", s.resultSize}});
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::string out = fmt::format("einsum      {}\noutput      {}\nlabels     ", einsum.canonical(),
                                shapeToString(einsum.outputShape));
  for (int l = 0; l < einsum.numLabels(); ++l)
    out += fmt::format(" {}={}", einsum.labelName[l], einsum.labelSize[l]);
  out += fmt::format("\nplan ({}): total MACs {}, largest intermediate {}\n", plan.method,
                     plan.totalMacs, plan.largestIntermediate);
  out += describePlan(plan, einsum.labelName);
  std::printf("%s", out.c_str());
}

void inspect(const InspectOptions& options) {
  if (!isStructureSpec(options.spec)) return inspectEinsum(options);
  if (!options.shapes.empty()) throw UserError("--shapes applies to classic einsums only");
  ir::LayerProgram program = buildLayer(options.spec);
  if (options.json)
    std::printf("%s\n", layerJson(program).dump(2).c_str());
  else
    std::printf("%s", layerTable(program).c_str());
}

}  // namespace

void addInspectCommand(CLI::App& app) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand(
      "inspect",
      "Show a structured layer's sizes, parameter tensors (shape, muP init std, Adam LR "
      "multiplier, weight decay), parameter count, MACs per row, theta taxonomy and program; "
      "or, for a classic einsum with --shapes, its contraction plan");
  cmd->add_option("SPEC", options->spec,
                  "structure spec, e.g. 'btt(in=1024, out=1024, rank=4)', or a classic einsum")
      ->required();
  cmd->add_option("--shapes,--shape", options->shapes,
                  "operand shapes for a classic einsum, e.g. 10x100,100x5,5x50 (a scalar: '')");
  cmd->add_flag("--json", options->json, "print JSON instead of a table");
  cmd->callback([options] { inspect(*options); });
}

}  // namespace einjit::cli
