// Ctrl-C during training: while an InterruptGuard lives, SIGINT asks the trainers to stop at
// their next step (models::requestStop) instead of killing the process, so a checkpoint is
// written and temporary files are cleaned up; the previous handler comes back when it goes.
#pragma once

#include <csignal>

#include "models/Trainer.h"

namespace einjit::cli {

class InterruptGuard {
 public:
  InterruptGuard() : previous_(std::signal(SIGINT, onInterrupt)) { models::clearStopRequest(); }
  ~InterruptGuard() { std::signal(SIGINT, previous_); }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  static void onInterrupt(int) { models::requestStop(); }
  void (*previous_)(int);
};

}  // namespace einjit::cli
