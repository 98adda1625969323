// Errors einjit reports to users. Everything a user can get wrong (a spec, a file, a shape)
// throws a UserError; the CLI prints its message on one line and exits with status 1.
#pragma once

#include <stdexcept>
#include <string>

namespace einjit {

class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A 1-based position inside a spec string. Multi-line specs count lines from 1.
struct SourceLoc {
  int line = 1;
  int column = 1;
};

// A rejected spec: where (line, column) and what was expected there. what() is the one-line
// cause ("line 1, column 7: expected ..."); render() adds the offending source line and a caret.
class SpecError : public UserError {
 public:
  SpecError(std::string source, SourceLoc loc, const std::string& message);

  const SourceLoc& loc() const { return loc_; }
  const std::string& message() const { return message_; }
  const std::string& source() const { return source_; }

  // "error: line L, column C: MESSAGE\n  <line text>\n  <spaces>^\n"
  std::string render() const;

 private:
  std::string source_;
  SourceLoc loc_;
  std::string message_;
};

}  // namespace einjit
