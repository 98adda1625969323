#include <sstream>

#include "einjit/error.h"

namespace einjit {

namespace {

std::string oneLine(const SourceLoc& loc, const std::string& message) {
  return "line " + std::to_string(loc.line) + ", column " + std::to_string(loc.column) + ": " +
         message;
}

// The text of line `line` (1-based) of `source`, without its newline.
std::string sourceLine(const std::string& source, int line) {
  std::istringstream in(source);
  std::string text;
  for (int i = 1; std::getline(in, text); ++i)
    if (i == line) return text;
  return "";
}

}  // namespace

SpecError::SpecError(std::string source, SourceLoc loc, const std::string& message)
    : UserError(oneLine(loc, message)),
      source_(std::move(source)),
      loc_(loc),
      message_(message) {}

std::string SpecError::render() const {
  std::string text = sourceLine(source_, loc_.line);
  // Keep tabs in the caret line so the caret stays under the column in a terminal.
  std::string caret;
  for (int i = 0; i + 1 < loc_.column; ++i)
    caret += (i < static_cast<int>(text.size()) && text[i] == '\t') ? '\t' : ' ';
  return "error: " + std::string(what()) + "\n  " + text + "\n  " + caret + "^\n";
}

}  // namespace einjit
