#include <algorithm>
#include <string>

#include "frontend/structures/Structures.h"

namespace einjit {

// Greedy over prime factors (docs/layouts.md): the primes of d, largest first, each multiplied
// into the currently smallest factor; the factors sorted ascending at the end.
std::vector<int64_t> factorize(int64_t d, int n) {
  if (d < 1 || n < 1)
    throw UserError("factorize(" + std::to_string(d) + ", " + std::to_string(n) +
                    "): both arguments must be positive");
  std::vector<int64_t> primes;
  int64_t rest = d;
  for (int64_t p = 2; p <= rest / p; ++p)
    while (rest % p == 0) {
      primes.push_back(p);
      rest /= p;
    }
  if (rest > 1) primes.push_back(rest);
  std::vector<int64_t> factors(n, 1);
  for (auto prime = primes.rbegin(); prime != primes.rend(); ++prime)
    *std::min_element(factors.begin(), factors.end()) *= *prime;
  std::sort(factors.begin(), factors.end());
  return factors;
}

}  // namespace einjit
