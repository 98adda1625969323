// Parses operand shapes written on the command line: "10x100,100x5,5x50"; an empty entry is a
// scalar ("2x3,,3" is three operands, the second a scalar).
#pragma once

#include <string>
#include <vector>

#include "einjit/tensor.h"

namespace einjit::cli {

std::vector<Shape> parseShapeList(const std::string& text);

}  // namespace einjit::cli
