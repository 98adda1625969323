#!/usr/bin/python3
"""Expected window starts and sample indices for the data set tests, computed by an independent
Python implementation of std::mt19937_64 (the C++ standard's parameters), splitmix64 and the
rejection mapping documented in models/data/Sampling.h. Prints C++ initialiser lists that
TextDatasetTest.cpp and ImageDatasetTest.cpp hard-code.

    /usr/bin/python3 tests/models/data/make_sampling_cases.py
"""
MASK = (1 << 64) - 1


class MT19937_64:
    n, m = 312, 156

    def __init__(self, seed):
        self.mt = [0] * self.n
        self.mt[0] = seed & MASK
        for i in range(1, self.n):
            prev = self.mt[i - 1]
            self.mt[i] = (6364136223846793005 * (prev ^ (prev >> 62)) + i) & MASK
        self.index = self.n

    def twist(self):
        upper, lower = 0xFFFFFFFF80000000, 0x7FFFFFFF
        for i in range(self.n):
            x = (self.mt[i] & upper) | (self.mt[(i + 1) % self.n] & lower)
            xa = x >> 1
            if x & 1:
                xa ^= 0xB5026F5AA96619E9
            self.mt[i] = self.mt[(i + self.m) % self.n] ^ xa
        self.index = 0

    def __call__(self):
        if self.index >= self.n:
            self.twist()
        y = self.mt[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & MASK


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def derive_seed(seed, stream):
    return splitmix64(splitmix64(seed) ^ stream)


def uniform_below(rng, bound):
    rejected = (1 << 64) % bound
    while True:
        x = rng()
        if x < (1 << 64) - rejected:
            return x % bound


def draws(seed, stream, bound, count):
    rng = MT19937_64(derive_seed(seed, stream))
    return [uniform_below(rng, bound) for _ in range(count)]


def show(name, values):
    print(f"{name} = {{{', '.join(map(str, values))}}};")


# The C++ standard's check value: the 10000th output of a default-seeded (5489) mt19937_64.
rng = MT19937_64(5489)
for _ in range(9999):
    rng()
assert rng() == 9981545732273789042

# TextDatasetTest: 40 tokens, context 3 -> train 36 tokens (33 starts), validation 4 (1 start).
show("trainStep0", draws(7, 0, 33, 5))   # step 0, training: stream 2 * 0
show("trainStep1", draws(7, 2, 33, 5))   # step 1, training: stream 2 * 1
# ImageDatasetTest: 6 training images, seed 3, step 4 (stream 8); 2 test images, step 4 (stream 9).
show("imageTrainStep4", draws(3, 8, 6, 8))
show("imageTestStep4", draws(3, 9, 2, 8))
# SamplingTest: deriveSeed values and a draw over a bound that forces rejections (2^63 + 1).
show("derived", [derive_seed(42, 0), derive_seed(42, 1), derive_seed(0, 0)])
show("bigBound", draws(1, 0, (1 << 63) + 1, 4))
