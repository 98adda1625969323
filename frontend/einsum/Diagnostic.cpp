#include <algorithm>
#include <cstddef>
#include <sstream>
#include <string>
#include <utility>

#include "einjit/error.h"

namespace einjit {

namespace {

std::string oneLine(const SourceLoc& loc, const std::string& message) {
  return "line " + std::to_string(loc.line) + ", column " + std::to_string(loc.column) + ": " +
         message;
}

// The text of line `line` (1-based) of `source`, without its line ending ("\n" or "\r\n").
std::string sourceLine(const std::string& source, int line) {
  std::istringstream in(source);
  std::string text;
  for (int i = 1; std::getline(in, text); ++i) {
    if (i != line) continue;
    if (!text.empty() && text.back() == '\r') text.pop_back();
    return text;
  }
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
  // A column past the end of the line (the end of the spec) puts the caret just after it.
  const std::size_t width =
      std::min(static_cast<std::size_t>(std::max(loc_.column - 1, 0)), text.size());
  std::string caret;
  for (std::size_t i = 0; i < width; ++i) caret += text[i] == '\t' ? '\t' : ' ';
  return "error: " + std::string(what()) + "\n  " + text + "\n  " + caret + "^\n";
}

}  // namespace einjit
