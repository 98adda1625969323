#!/usr/bin/python3
"""The PyTorch baseline of einjit's benchmarks: structured layers in the bmm form the papers'
reference code uses, timed forward and forward+backward (autograd), float32, on CPU.

Forms (docs/layouts.md gives the index conventions):
  dense      y = x @ W
  lowrank    y = (x @ U) @ V
  monarch    reshape, bmm with W1^T, reshape-transpose (P1), bmm with W2^T, permute (P2)
             (the reference's blockdiag_butterfly_multiply), zero-padding / truncation as needed
  btt        2 cores: reshape, transpose, bmm with W0, transpose/reshape, bmm with W1,
             transpose/reshape (the reference's BlockTeTr forward; its gradient here is autograd's)
Forward timings run under torch.no_grad(); forward+backward runs the forward with autograd and
y.backward(dy), gradients for x and every parameter.

Usage:
  torch_layers.py --rows N [--seconds S] [--threads T] --case fwd|bwd SPEC [--case ...]
      one JSON line per case: {"case": i, "spec": ..., "pass": ..., "ms": median, "runs": k,
      "torch": version, "threads": T} or {"case": i, "spec": ..., "error": why}
  torch_layers.py --check SPEC DIR
      float64: reads DIR/params.npz, DIR/x.npy, DIR/dy.npy; writes DIR/y.npy, DIR/dx.npy and
      DIR/dparams.npz (gradients of sum(y * dy)). Used by tests/bench to check these forms.
"""

import argparse
import json
import math
import os
import re
import sys
import time

import blas_threads

blas_threads.limit_to_threads_argument()  # before torch loads OpenBLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# factorize(d, n) as the IR builders do it (docs/layouts.md): one Python copy, in the fixture script.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from make_layer_fixtures import factorize  # noqa: E402


def parse_spec(spec):
    """'btt(in=1024, out=1024, rank=4)' -> ('btt', {'in': '1024', 'out': '1024', 'rank': '4'})."""
    match = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", spec, re.S)
    if not match:
        raise ValueError(f"malformed spec {spec!r}")
    args = {}
    for item in match.group(2).split(","):
        key, _, value = item.strip().partition("=")
        if key:
            args[key.strip()] = value.strip() or "true"
    return match.group(1).lower(), args


def dense(x, w):
    return x @ w


def lowrank(x, u, v):
    return (x @ u) @ v


def monarch(x, w1, w2, d_out):
    n = x.shape[0]
    k, q, p = w1.shape
    l, s, r = w2.shape
    if k * p > x.shape[1]:
        x = F.pad(x, (0, k * p - x.shape[1]))
    x = x.reshape(n, k, p).transpose(0, 1)                               # (k, n, p)
    out1 = torch.bmm(x, w1.transpose(-1, -2))                            # (k, n, q)
    out1 = out1.transpose(0, 1).reshape(n, r, l).transpose(-1, -2).contiguous().transpose(0, 1)
    out2 = torch.bmm(out1, w2.transpose(-1, -2))                         # (l, n, s)
    out2 = out2.permute(1, 2, 0).reshape(n, s * l)
    return out2[:, :d_out] if s * l > d_out else out2


def btt(x, w0, w1):
    n = x.shape[0]
    m1, m0, _ = w0.shape
    n0, m1r, n1 = w1.shape
    r = m1r // m1
    y = x.reshape(n, m1, m0).transpose(0, 1)                             # (m1, n, m0)
    out1 = torch.bmm(y, w0)                                              # (m1, n, n0 r)
    out1 = out1.reshape(m1, n, n0, r).transpose(0, 2).contiguous().reshape(n0, n, m1 * r)
    out2 = torch.bmm(out1, w1)                                           # (n0, n, n1)
    return out2.transpose(0, 1).reshape(n, n0 * n1)


class Layer:
    """Sizes, parameter shapes (by einjit's names) and the forward of one spec."""

    def __init__(self, spec):
        name, args = parse_spec(spec)
        name = {"low_rank": "lowrank"}.get(name, name)
        if args.pop("norm", "false") != "false":
            raise ValueError("weight normalisation (norm) is not in the PyTorch baseline")
        args.pop("base", None)  # muP base width: no effect on the computation
        self.d_in, self.d_out = int(args.pop("in")), int(args.pop("out"))
        if name == "dense":
            self.shapes = {"W": (self.d_in, self.d_out)}
            self.forward = dense
        elif name == "lowrank":
            r = int(args.pop("rank", math.ceil(math.sqrt(min(self.d_in, self.d_out)))))
            self.shapes = {"U": (self.d_in, r), "V": (r, self.d_out)}
            self.forward = lowrank
        elif name == "monarch":
            b = int(args.pop("blocks", 4))
            b = math.ceil(math.sqrt(self.d_in)) if b == -1 else b
            p, s = -(-self.d_in // b), -(-self.d_out // b)
            q = p if b * p < b * s else s
            self.shapes = {"W1": (b, q, p), "W2": (b, s, q)}
            self.forward = lambda x, w1, w2: monarch(x, w1, w2, self.d_out)
        elif name == "btt":
            r = int(args.pop("rank", 1))
            if int(args.pop("cores", 2)) != 2:
                raise ValueError("only 2-core btt is in the PyTorch baseline")
            m0, m1 = factorize(self.d_in, 2)
            n0, n1 = factorize(self.d_out, 2)
            self.shapes = {"W0": (m1, m0, n0 * r), "W1": (n0, m1 * r, n1)}
            self.forward = btt
        else:
            raise ValueError(f"structure '{name}' is not in the PyTorch baseline")
        if args:
            raise ValueError(f"unsupported arguments {sorted(args)}")


def time_median(fn, seconds):
    """Warm-up run, then k runs (3 <= k <= 50, set by the first) filling about `seconds`;
    the median in ms. A warm-up run longer than `seconds` is itself the measurement."""
    def timed():
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    warmup = timed()
    if warmup >= seconds:
        return warmup * 1e3, 1
    times = [timed()]
    runs = int(min(50, max(3, seconds / max(times[0], 1e-6))))
    while len(times) < runs:
        times.append(timed())
    times.sort()
    mid = len(times) // 2
    median = times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid])
    return median * 1e3, runs


def time_case(spec, backward, rows, seconds):
    layer = Layer(spec)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, layer.d_in, generator=gen)
    params = [torch.randn(shape, generator=gen) / math.sqrt(shape[-2] if len(shape) > 1 else 1)
              for shape in layer.shapes.values()]
    if not backward:
        def step():
            with torch.no_grad():
                layer.forward(x, *params)
        return time_median(step, seconds)
    leaves = [x.requires_grad_()] + [p.requires_grad_() for p in params]
    dy = torch.randn(rows, layer.d_out, generator=gen)

    def step():
        for leaf in leaves:
            leaf.grad = None
        layer.forward(x, *params).backward(dy)
    return time_median(step, seconds)


def check(spec, directory):
    layer = Layer(spec)
    stored = np.load(f"{directory}/params.npz")
    params = [torch.tensor(stored[name], dtype=torch.float64, requires_grad=True)
              for name in layer.shapes]
    for name, param in zip(layer.shapes, params):
        if tuple(param.shape) != layer.shapes[name]:
            raise ValueError(f"{name}: shape {tuple(param.shape)}, expected {layer.shapes[name]}")
    x = torch.tensor(np.load(f"{directory}/x.npy"), dtype=torch.float64, requires_grad=True)
    dy = torch.tensor(np.load(f"{directory}/dy.npy"), dtype=torch.float64)
    y = layer.forward(x, *params)
    y.backward(dy)
    np.save(f"{directory}/y.npy", y.detach().numpy())
    np.save(f"{directory}/dx.npy", x.grad.numpy())
    np.savez(f"{directory}/dparams.npz",
             **{name: p.grad.numpy() for name, p in zip(layer.shapes, params)})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--seconds", type=float, default=1.0, help="time budget per case")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", nargs=2, action="append", default=[],
                        metavar=("fwd|bwd", "SPEC"))
    parser.add_argument("--check", nargs=2, metavar=("SPEC", "DIR"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.check:
        check(*args.check)
        return
    for index, (mode, spec) in enumerate(args.case):
        record = {"case": index, "spec": spec, "pass": mode}
        try:
            if mode not in ("fwd", "bwd"):
                raise ValueError(f"unknown pass '{mode}' (expected fwd or bwd)")
            ms, runs = time_case(spec, mode == "bwd", args.rows, args.seconds)
            record.update(ms=ms, runs=runs, torch=torch.__version__,
                          threads=torch.get_num_threads())
        except (ValueError, KeyError, RuntimeError) as error:
            record["error"] = f"{type(error).__name__}: {error}"
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
