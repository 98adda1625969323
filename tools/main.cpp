// einjit: run einsums, inspect structured-layer specs, run layers (see --help).
#include <algorithm>
#include <cstdio>
#include <new>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "einjit/error.h"
#include "tools/Commands.h"

int main(int argc, char** argv) {
  CLI::App app{
      "einjit: a JIT einsum compiler and runtime for structured linear layers.\n"
      "Structure specs look like btt(in=1024, out=1024, rank=4); see README.md for the grammar.",
      "einjit"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Print help for every subcommand");
  einjit::cli::addRunCommand(app);
  einjit::cli::addInspectCommand(app);
  einjit::cli::addLayerCommand(app);
  einjit::cli::addCompileCommand(app);
  einjit::cli::addBenchCommand(app);
  einjit::cli::addDemoCommand(app);
  einjit::cli::addTrainCommand(app);
  einjit::cli::addSampleCommand(app);

  // An einsum with an empty first term starts with "->" (e.g. "->" on one scalar operand), which
  // CLI11 would take for an option. No option starts with "->", and numpy allows spaces in
  // einsums, so such an argument is passed on with a leading space.
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::string& arg : args)
    if (arg.rfind("->", 0) == 0) arg.insert(0, " ");
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments in reverse order

  try {
    app.parse(args);  // the selected subcommand's callback runs inside parse
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 1;
  } catch (const einjit::SpecError& e) {
    std::fprintf(stderr, "einjit: %s", e.render().c_str());
    return 1;
  } catch (const einjit::UserError& e) {
    std::fprintf(stderr, "einjit: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "einjit: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "einjit: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
