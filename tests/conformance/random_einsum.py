#!/usr/bin/python3
"""Random classic-einsum conformance test: `einjit run` against numpy.einsum.

Generates random einsums (1-4 operands, upper- and lower-case labels, diagonals, summed labels,
implicit and explicit outputs, ellipsis broadcasting with size-1 dims and different ellipsis
ranks, scalar operands, spaces, float32/float64 mixes, Fortran-order inputs), runs each through
`einjit run EXPR A.npy ... -o OUT.npy` and compares with numpy.einsum computed in float64.
Then checks that user errors exit with status 1, a short message and no output file.

Usage: random_einsum.py --einjit PATH [--count N] [--seed S] [--target ref|cpu|cuda]
Exit status: 0 when every case passes, 1 otherwise.
"""

import argparse
import os
import string
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cli_errors import check_error_output  # noqa: E402

LABELS = string.ascii_letters
MAX_LOOP_SIZE = 20000  # product of all label sizes: keeps the naive reference executor fast
RTOL = 1e-4
ATOL = 1e-4


class Case:
    def __init__(self, spec, operands):
        self.spec = spec          # as passed to einjit (may contain spaces)
        self.operands = operands  # numpy arrays, some Fortran-ordered


def add_spaces(rng, term):
    """Puts random spaces between the tokens of `term` (never inside '...' or '->')."""
    tokens = []
    i = 0
    while i < len(term):
        if term.startswith("...", i):
            tokens.append("...")
            i += 3
        elif term.startswith("->", i):
            tokens.append("->")
            i += 2
        else:
            tokens.append(term[i])
            i += 1
    out = " " * int(rng.integers(0, 2))
    for token in tokens:
        out += token + " " * int(rng.choice([0, 0, 1, 2]))
    return out


def random_case(rng):
    n_ops = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.4, 0.2, 0.15]))
    pool = list(rng.choice(list(LABELS), size=int(rng.integers(1, 7)), replace=False))
    size = {label: int(rng.integers(1, 6)) for label in pool}
    use_ellipsis = rng.random() < 0.35
    # The broadcast ellipsis shape; each operand with '...' takes a right-aligned suffix of it,
    # with some dims replaced by 1 (numpy broadcasting).
    ell_shape = [int(rng.integers(1, 5)) for _ in range(int(rng.integers(0, 4)))]

    terms = []  # per operand: list of labels with '...' possibly among them
    for _ in range(n_ops):
        rank = 0 if rng.random() < 0.1 else int(rng.integers(1, 5))
        labels = [str(label) for label in rng.choice(pool, size=rank, replace=True)]
        if use_ellipsis and rng.random() < 0.75:
            labels.insert(int(rng.integers(0, len(labels) + 1)), "...")
        terms.append(labels)

    # Bound the loop nest: shrink label sizes until the product of all sizes is small.
    def loop_size():
        used = {label for term in terms for label in term if label != "..."}
        total = 1
        for label in used:
            total *= size[label]
        if any("..." in term for term in terms):
            for dim in ell_shape:
                total *= dim
        return total

    while loop_size() > MAX_LOOP_SIZE:
        big = [label for label in pool if size[label] > 1]
        label = big[int(rng.integers(0, len(big)))]
        size[label] -= 1

    # Shapes. A label that occurs once in an operand and also in another operand is sometimes
    # given size 1 there (numpy broadcasts size-1 labelled dims, as bindEinsum documents).
    occurrences = {}
    for k, term in enumerate(terms):
        for label in term:
            if label != "...":
                occurrences.setdefault(label, set()).add(k)
    shapes = []
    ellipsis_dims = 0  # the broadcast rank of all ellipses
    for k, term in enumerate(terms):
        shape = []
        for label in term:
            if label == "...":
                ell_rank = int(rng.integers(0, len(ell_shape) + 1))
                ellipsis_dims = max(ellipsis_dims, ell_rank)
                suffix = ell_shape[len(ell_shape) - ell_rank:]
                shape.extend(1 if rng.random() < 0.3 else dim for dim in suffix)
            else:
                broadcastable = term.count(label) == 1 and len(occurrences[label]) > 1
                shape.append(1 if broadcastable and rng.random() < 0.1 else size[label])
        shapes.append(tuple(shape))

    # Output: implicit, or an explicit permutation of a subset of the input labels.
    has_ellipsis = any("..." in term for term in terms)
    if rng.random() < 0.35:
        output = None
    else:
        used = sorted({label for term in terms for label in term if label != "..."})
        keep = [label for label in used if rng.random() < 0.6]
        output = [str(label) for label in rng.permutation(keep)] if keep else []
        # numpy: the output needs '...' when the ellipses cover dimensions; it may have one
        # when they cover none, or even when no input has one.
        if (ellipsis_dims > 0 or (has_ellipsis and rng.random() < 0.5)
                or rng.random() < 0.05):
            output.insert(int(rng.integers(0, len(output) + 1)), "...")

    spec = ",".join("".join(term) for term in terms)
    if spec == "":
        output = []  # a lone scalar: "->" rather than the empty string
    if output is not None:
        spec += "->" + "".join(output)
    if rng.random() < 0.2:
        spec = add_spaces(rng, spec)

    dtype_mode = rng.choice(["f32", "f64", "mixed"], p=[0.4, 0.3, 0.3])
    operands = []
    for shape in shapes:
        if dtype_mode == "mixed":
            dtype = np.float32 if rng.random() < 0.5 else np.float64
        else:
            dtype = np.float32 if dtype_mode == "f32" else np.float64
        array = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
        if array.ndim >= 2 and rng.random() < 0.3:
            array = np.asfortranarray(array)
        operands.append(array)
    return Case(spec, operands)


def run_einjit(einjit, spec, paths, out, target):
    command = [einjit, "run", spec, *paths, "-o", out]
    if target:
        command += ["--target", target]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def describe(case):
    parts = []
    for array in case.operands:
        order = "F" if (array.ndim >= 2 and array.flags.f_contiguous
                        and not array.flags.c_contiguous) else "C"
        parts.append(f"{array.shape}:{array.dtype}:{order}")
    return f"spec {case.spec!r} operands [{', '.join(parts)}]"


def check_case(einjit, case, workdir, target):
    """Returns None on success, else a failure description."""
    paths = []
    for k, array in enumerate(case.operands):
        path = os.path.join(workdir, f"op{k}.npy")
        np.save(path, array)
        paths.append(path)
    out = os.path.join(workdir, "out.npy")
    if os.path.exists(out):
        os.remove(out)

    clean_spec = case.spec.replace(" ", "")
    expected = np.einsum(clean_spec, *[a.astype(np.float64) for a in case.operands],
                         optimize=False)
    # Bound on the accumulated rounding error: einjit may compute in float32 when every operand
    # is float32, and a result entry that cancels to ~0 still carries an error proportional to
    # the sum of the magnitudes of its terms, so atol is scaled by that sum (einsum of |A|).
    magnitude = np.einsum(clean_spec, *[np.abs(a.astype(np.float64)) for a in case.operands],
                          optimize=False)
    any_f64 = any(a.dtype == np.float64 for a in case.operands)
    expected_dtype = np.float64 if any_f64 else np.float32

    proc = run_einjit(einjit, case.spec, paths, out, target)
    if proc.returncode != 0:
        return f"exit status {proc.returncode}; stderr: {proc.stderr.strip()}"
    if not os.path.exists(out):
        return f"exit 0 but no output file; stderr: {proc.stderr.strip()}"
    got = np.load(out)
    if got.shape != expected.shape:
        return f"shape {got.shape}, expected {expected.shape}"
    if got.dtype != expected_dtype:
        return f"dtype {got.dtype}, expected {np.dtype(expected_dtype)}"
    tolerance = RTOL * np.abs(expected) + ATOL * np.maximum(1.0, magnitude)
    error = np.abs(got.astype(np.float64) - expected)
    if not np.all(error <= tolerance):
        worst = np.unravel_index(np.argmax(error - tolerance), error.shape) if error.ndim else ()
        return (f"values differ: max abs error {error.max():.3g} at {worst} "
                f"(got {got[worst]!r}, expected {expected[worst]!r}, tolerance "
                f"{tolerance[worst]:.3g})")
    return None


def negative_cases(einjit, workdir, target):
    """User errors: each must exit 1 with a short message and leave no output file."""
    rng = np.random.default_rng(0)

    def array(*shape, dtype=np.float64):
        return rng.uniform(-1, 1, size=shape).astype(dtype)

    # (name, spec, operands, is a spec error, extra raw files)
    cases = [
        ("size mismatch", "ij,jk->ik", [array(2, 3), array(4, 5)], True),
        ("diagonal size mismatch", "ii->i", [array(2, 3)], True),
        ("too few operands", "ij,jk->ik", [array(2, 3)], True),
        ("too many operands", "ij->ji", [array(2, 3), array(3, 2)], True),
        ("rank mismatch", "ijk->k", [array(2, 3)], True),
        ("bad character", "i$j->j", [array(2, 3)], True),
        ("arrow twice", "ij->j->i", [array(2, 3)], True),
        ("stray dot", "i.j->j", [array(2, 3)], True),
        ("two ellipses", "...i...->i", [array(2, 3)], True),
        ("output label not in input", "ij->k", [array(2, 3)], True),
        ("label repeated in output", "ij->ii", [array(2, 3)], True),
        ("output lacks the ellipsis", "i...->i", [array(2, 3)], True),
        ("empty spec", "", [array(2)], True),
        ("ellipsis dims that do not broadcast", "...,...->...",
         [array(2, 3), array(4, 3)], True),
    ]
    failures = []
    for name, spec, operands, is_spec_error in cases:
        paths = []
        for k, operand in enumerate(operands):
            path = os.path.join(workdir, f"neg{k}.npy")
            np.save(path, operand)
            paths.append(path)
        failures += expect_rejected(einjit, name, spec, paths, workdir, target, is_spec_error)

    # File-level errors: a missing file, a file that is not .npy, an unsupported dtype.
    good = os.path.join(workdir, "good.npy")
    np.save(good, array(2, 3))
    text = os.path.join(workdir, "not_npy.npy")
    with open(text, "w") as handle:
        handle.write("this is not a numpy file\n")
    ints = os.path.join(workdir, "ints.npy")
    np.save(ints, np.arange(6, dtype=np.int64).reshape(2, 3))
    truncated = os.path.join(workdir, "truncated.npy")
    with open(good, "rb") as handle:
        data = handle.read()
    with open(truncated, "wb") as handle:
        handle.write(data[:-8])
    for name, paths in [("missing input file", [os.path.join(workdir, "absent.npy")]),
                        ("input is not .npy", [text]),
                        ("int64 input", [ints]),
                        ("truncated .npy", [truncated])]:
        failures += expect_rejected(einjit, name, "ij->ji", paths, workdir, target, False)
    return len(cases) + 4, failures


def expect_rejected(einjit, name, spec, paths, workdir, target, is_spec_error):
    out = os.path.join(workdir, "neg_out.npy")
    before = set(os.listdir(workdir))
    proc = run_einjit(einjit, spec, paths, out, target)
    problems = check_error_output(proc, allow_caret=is_spec_error)
    created = set(os.listdir(workdir)) - before
    if created:
        problems.append(f"files created: {sorted(created)}")
        for leftover in created:
            os.remove(os.path.join(workdir, leftover))
    if problems:
        return [f"negative case '{name}' (spec {spec!r}): " + "; ".join(problems)
                + f"; stderr: {proc.stderr.strip()!r}"]
    return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--einjit", required=True, help="path of the einjit binary")
    parser.add_argument("--count", type=int, default=300, help="number of random einsums")
    parser.add_argument("--seed", type=int, default=20240611, help="random seed")
    parser.add_argument("--target", default=None, help="passed to einjit run --target")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    failures = []
    with tempfile.TemporaryDirectory(prefix="einjit_conformance_") as workdir:
        for index in range(args.count):
            case = random_case(rng)
            case_dir = os.path.join(workdir, "case")
            os.makedirs(case_dir, exist_ok=True)
            try:
                problem = check_case(args.einjit, case, case_dir, args.target)
            except subprocess.TimeoutExpired:
                problem = "einjit timed out"
            if problem:
                failures.append(f"case {index}: {describe(case)}: {problem}")
            for name in os.listdir(case_dir):
                os.remove(os.path.join(case_dir, name))
        neg_dir = os.path.join(workdir, "negative")
        os.makedirs(neg_dir)
        neg_count, neg_failures = negative_cases(args.einjit, neg_dir, args.target)
        failures += neg_failures

    total = args.count + neg_count
    print(f"random_einsum: {total - len(failures)}/{total} passed "
          f"({args.count} random einsums, seed {args.seed}; {neg_count} negative cases)")
    for failure in failures:
        print("FAIL", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
