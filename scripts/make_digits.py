#!/usr/bin/python3
"""Generates the small image set of the MLP classifier: procedurally drawn 16x16 digits.

    /usr/bin/python3 scripts/make_digits.py OUT.npz      write the set (atomically)
    /usr/bin/python3 scripts/make_digits.py --check F     exit 0 when F is a valid set

Each image is one of the ten digits of a 5x7 bitmap font, drawn through a random affine map
(scale 1.6-2.2 px per font cell, rotation +-12 degrees, shear +-0.2, shift +-2 px around the
centre) with bilinear sampling, a random stroke intensity in [0.6, 1], plus Gaussian pixel noise
(sigma 0.1), clipped to [0, 1] and quantised to multiples of 1/255. Deterministic: numpy's
PCG64 generator with a fixed seed.

The npz (numpy.savez_compressed, which einjit's reader supports) holds float32 images and
float64 labels, the dtypes einjit's npy reader reads:
    train_images (6000, 16, 16) float32 in [0, 1]    train_labels (6000,) float64 in 0..9
    test_images  (1000, 16, 16) float32               test_labels  (1000,) float64
Classes are balanced: every digit appears 600 times in train and 100 times in test.
"""
import os
import sys
import tempfile

import numpy as np

SIZE = 16
CLASSES = 10
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100
SEED = 20240611

FONT = [  # 5 columns x 7 rows per digit
    ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    ["11111", "00010", "00100", "00010", "00001", "10001", "01110"],
    ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
]
GLYPHS = np.array([[[c == "1" for c in row] for row in digit] for digit in FONT], dtype=np.float64)


def sample_bilinear(glyph, u, v):
    """The glyph (7 rows x 5 columns, zero outside) at continuous cell coordinates (u: column, v: row)."""
    rows, cols = glyph.shape
    padded = np.zeros((rows + 2, cols + 2))
    padded[1:-1, 1:-1] = glyph
    # Cell centres sit at integer + 0.5; shift by one for the padding and clamp to the border.
    x = np.clip(u - 0.5 + 1, 0, cols + 1)
    y = np.clip(v - 0.5 + 1, 0, rows + 1)
    x0 = np.minimum(np.floor(x).astype(int), cols)
    y0 = np.minimum(np.floor(y).astype(int), rows)
    fx, fy = x - x0, y - y0
    return ((1 - fx) * (1 - fy) * padded[y0, x0] + fx * (1 - fy) * padded[y0, x0 + 1]
            + (1 - fx) * fy * padded[y0 + 1, x0] + fx * fy * padded[y0 + 1, x0 + 1])


def draw(rng, digit):
    scale = rng.uniform(1.6, 2.2)
    angle = np.deg2rad(rng.uniform(-12, 12))
    shear = rng.uniform(-0.2, 0.2)
    shift = rng.uniform(-2, 2, size=2)
    intensity = rng.uniform(0.6, 1.0)
    # Pixel centre (px, py) -> font cell coordinates (u, v): the inverse of
    # pixel = centre + shift + scale * R(angle) * S(shear) * (cell - glyph centre).
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = scale * rot @ np.array([[1, shear], [0, 1]])
    inverse = np.linalg.inv(forward)
    py, px = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    d = np.stack([px.ravel(), py.ravel()]) - (SIZE / 2 + shift)[:, None]
    u, v = inverse @ d
    u += 2.5  # glyph centre: 5 columns, 7 rows
    v += 3.5
    image = intensity * sample_bilinear(GLYPHS[digit], u, v).reshape(SIZE, SIZE)
    image += rng.normal(0, 0.1, size=image.shape)
    return np.round(np.clip(image, 0, 1) * 255) / 255


def make_split(rng, per_class):
    labels = np.repeat(np.arange(CLASSES), per_class)
    rng.shuffle(labels)
    images = np.stack([draw(rng, d) for d in labels]).astype(np.float32)
    return images, labels.astype(np.float64)


def check(path):
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # any unreadable file is simply invalid
        print(f"make_digits: {path}: unreadable ({e})", file=sys.stderr)
        return False
    expected = {"train_images": ((CLASSES * TRAIN_PER_CLASS, SIZE, SIZE), np.float32),
                "train_labels": ((CLASSES * TRAIN_PER_CLASS,), np.float64),
                "test_images": ((CLASSES * TEST_PER_CLASS, SIZE, SIZE), np.float32),
                "test_labels": ((CLASSES * TEST_PER_CLASS,), np.float64)}
    for name, (shape, dtype) in expected.items():
        a = arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            print(f"make_digits: {path}: {name} missing or not {shape} {np.dtype(dtype)}", file=sys.stderr)
            return False
    return True


def main(argv):
    if len(argv) == 3 and argv[1] == "--check":
        return 0 if check(argv[2]) else 1
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    rng = np.random.default_rng(SEED)
    train_images, train_labels = make_split(rng, TRAIN_PER_CLASS)
    test_images, test_labels = make_split(rng, TEST_PER_CLASS)
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, train_images=train_images, train_labels=train_labels,
                                test_images=test_images, test_labels=test_labels)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"make_digits: wrote {out} ({os.path.getsize(out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
