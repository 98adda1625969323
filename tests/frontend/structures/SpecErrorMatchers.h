// Shared by the structure tests: expect a SpecError at an exact position.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "einjit/error.h"

namespace einjit::testing {

// Runs `action`, which must throw a SpecError at (line, column) whose message contains `text`.
inline void expectSpecError(const std::function<void()>& action, int line, int column,
                            const std::string& text) {
  try {
    action();
    ADD_FAILURE() << "no SpecError; expected one at " << line << ":" << column << " containing '"
                  << text << "'";
  } catch (const SpecError& error) {
    EXPECT_EQ(error.loc().line, line) << error.what();
    EXPECT_EQ(error.loc().column, column) << error.what();
    EXPECT_NE(error.message().find(text), std::string::npos)
        << "message '" << error.message() << "' lacks '" << text << "'";
  }
}

}  // namespace einjit::testing
