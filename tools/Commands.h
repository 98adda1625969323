// The einjit subcommands. Each registers its options on the CLI11 app and runs when selected;
// a command reports user mistakes by throwing einjit::UserError / SpecError (main turns them
// into a one-line message and exit status 1).
#pragma once

#include <CLI/CLI.hpp>

namespace einjit::cli {

void addRunCommand(CLI::App& app);
void addInspectCommand(CLI::App& app);
void addLayerCommand(CLI::App& app);
void addCompileCommand(CLI::App& app);
void addBenchCommand(CLI::App& app);
void addDemoCommand(CLI::App& app);
void addTrainCommand(CLI::App& app);
void addSampleCommand(CLI::App& app);

}  // namespace einjit::cli
