// The einjit API in a few lines: a BTT char-GPT takes one training step, then writes text.
#include <cstdio>
#include "einjit/einjit.h"

int main() {
  einjit::GptModel model(einjit::GptOptions{.context = 32, .layers = 2, .width = 64, .structure = "btt(rank=2)"});
  const std::vector<int32_t> ids = einjit::encodeChars("the quick brown fox jumps over the lazy dog again");
  const std::vector<int32_t> tokens(ids.begin(), ids.begin() + 32), targets(ids.begin() + 1, ids.begin() + 33);
  const double loss = model.trainStep(tokens, targets, /*batch=*/1, /*seq=*/32);
  const std::string text = einjit::decodeChars(model.generate(einjit::encodeChars("the "), 24, 1.0, 0, 7));
  std::printf("%lld parameters, loss %.4f, sample: the %s\n", static_cast<long long>(model.parameterCount()),
              loss, text.c_str());
}
