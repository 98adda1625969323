// libFuzzer target for the spec languages. The input is one spec string, parsed as a classic
// einsum (and bound to a few fixed sets of small shapes) and as a structure spec (and built
// into layer IR, with and without sizes from outside). Rejections must be einjit::UserError
// (SpecError is one; its rendering with a caret is exercised too); anything else escaping,
// a crash or a sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "einjit/error.h"
#include "frontend/einsum/BoundEinsum.h"
#include "frontend/einsum/EinsumAST.h"
#include "frontend/structures/Structures.h"

namespace {

using einjit::Shape;

// Shape sets to bind `ast` to: one consistent with the subscripts (each label has one size,
// an ellipsis stands for two dims), one of all ones (broadcasting), and one fixed set that
// ignores the subscripts (mostly rank and size mismatches).
std::vector<std::vector<Shape>> shapeSetsFor(const einjit::EinsumAST& ast) {
  std::vector<Shape> consistent, ones, fixed;
  const std::vector<Shape> fixedShapes = {{2, 3}, {3, 4}, {4}, {}, {2, 1, 3}};
  for (std::size_t operand = 0; operand < ast.inputs.size(); ++operand) {
    Shape shape;
    for (const einjit::Subscript& subscript : ast.inputs[operand].subscripts) {
      if (subscript.isEllipsis) {
        shape.push_back(2);
        shape.push_back(3);
      } else {
        shape.push_back(1 + static_cast<unsigned char>(subscript.label) % 4);
      }
    }
    consistent.push_back(shape);
    ones.push_back(Shape(shape.size(), 1));
    fixed.push_back(fixedShapes[operand % fixedShapes.size()]);
  }
  return {consistent, ones, fixed};
}

void fuzzEinsum(const std::string& spec) {
  einjit::EinsumAST ast;
  try {
    ast = einjit::parseEinsum(spec);
  } catch (const einjit::SpecError& error) {
    (void)error.render();
    return;
  } catch (const einjit::UserError&) {
    return;
  }
  for (const std::vector<Shape>& shapes : shapeSetsFor(ast)) {
    try {
      const einjit::BoundEinsum bound = einjit::bindEinsum(ast, shapes);
      (void)bound.canonical();
    } catch (const einjit::SpecError& error) {
      (void)error.render();
    } catch (const einjit::UserError&) {
    }
  }
}

void fuzzStructure(const std::string& text) {
  einjit::StructureSpec spec;
  try {
    spec = einjit::parseStructureSpec(text);
  } catch (const einjit::SpecError& error) {
    (void)error.render();
    return;
  } catch (const einjit::UserError&) {
    return;
  }
  const std::vector<std::pair<std::optional<int64_t>, std::optional<int64_t>>> sizes = {
      {std::nullopt, std::nullopt}, {64, 64}, {48, 80}};
  for (const auto& [dIn, dOut] : sizes) {
    try {
      const einjit::ir::LayerProgram program = einjit::buildLayer(spec, dIn, dOut);
      (void)program.paramCount();
      (void)program.macsPerRow();
    } catch (const einjit::SpecError& error) {
      (void)error.render();
    } catch (const einjit::UserError&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string spec(reinterpret_cast<const char*>(data), size);
  fuzzEinsum(spec);
  fuzzStructure(spec);
  return 0;
}
