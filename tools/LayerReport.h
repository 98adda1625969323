// Human (table) and machine (JSON) descriptions of a layer program, for `inspect` and `demo`.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "frontend/structures/LayerIR.h"

namespace einjit::cli {

std::string layerTable(const ir::LayerProgram& program);
nlohmann::json layerJson(const ir::LayerProgram& program);

}  // namespace einjit::cli
