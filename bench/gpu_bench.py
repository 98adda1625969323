#!/usr/bin/env python3
"""GPU benchmark: einjit's CUDA kernels against cuBLAS dense (torch.matmul), the PyTorch bmm form
of the same layer (bench/torch_layers.py) and torch.compile of that form, in one script.

For every structure (BTT rank 1/2/4, Monarch, dense), width d in 1024, 2048, 4096, 8192,
precision bf16 and fp32, pass forward and forward+backward, on N = 16384 rows, it prints the
time, TFLOP/s and the fraction of the roofline bound  max(FLOPs / peak, bytes / bandwidth)
(1.0 = at the bound; FLOPs = 2 x MACs, x3 with backward; bytes = one read of X and the weights
and one write of Y, x3 with backward, at the storage width).

einjit is timed by `einjit bench SPEC --target cuda --json` (CUDA events, median); torch with
CUDA events too. Needs a machine with an NVIDIA GPU and PyTorch with CUDA (`python3` on the GPU
image); `--help` works anywhere. Peaks are looked up from the device name (H100 SXM, H200;
override with --peak-tflops / --bandwidth).

Usage: gpu_bench.py --einjit build/tools/einjit [--rows 16384] [--widths 1024,4096]
                    [--precisions bf16,fp32] [--structures btt1,btt2,btt4,monarch,dense]
                    [--repeats 20] [--no-torch] [--json]
"""

import argparse
import json
import math
import os
import subprocess
import sys

# Dense peak TFLOP/s by precision and HBM bandwidth (TB/s): vendor datasheet numbers.
PEAKS = {
    "H100": {"bf16": 989.0, "fp32": 67.0, "tf32": 495.0, "bandwidth": 3.35},
    "H200": {"bf16": 989.0, "fp32": 67.0, "tf32": 495.0, "bandwidth": 4.8},
}

STRUCTURES = {
    "btt1": lambda d: f"btt(in={d}, out={d}, rank=1)",
    "btt2": lambda d: f"btt(in={d}, out={d}, rank=2)",
    "btt4": lambda d: f"btt(in={d}, out={d}, rank=4)",
    "monarch": lambda d: f"monarch(in={d}, out={d}, blocks={int(math.isqrt(d))})",
    "dense": lambda d: f"dense(in={d}, out={d})",
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--einjit", default="build/tools/einjit", help="the einjit binary")
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--widths", default="1024,2048,4096,8192")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--structures", default=",".join(STRUCTURES))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-torch", action="store_true", help="einjit only")
    parser.add_argument("--peak-tflops", type=float, help="override the device's dense peak")
    parser.add_argument("--bandwidth", type=float, help="override the device's TB/s")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    return parser.parse_args()


def einjit_time(args, spec, precision, backward):
    command = [args.einjit, "bench", spec, "--target", "cuda", "--rows", str(args.rows),
               "--precision", "bf16" if precision == "bf16" else "f32",
               "--repeats", str(args.repeats), "--json"]
    if backward:
        command.append("--backward")
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                           f"einjit exited with {proc.returncode}")
    return json.loads(proc.stdout)["milliseconds"]


def torch_time(torch, fn, repeats):
    fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return sorted(times)[len(times) // 2]


def torch_variants(torch, layer_class, spec, rows, precision, backward, repeats):
    """Times (ms) of cuBLAS dense of the same size, the bmm form, and torch.compile of it."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, as einjit computes it
    layer = layer_class(spec)
    x = torch.randn(rows, layer.d_in, device="cuda", dtype=dtype, requires_grad=backward)
    dy = torch.randn(rows, layer.d_out, device="cuda", dtype=dtype)
    params = [(torch.randn(*shape, device="cuda", dtype=dtype) * 0.02).requires_grad_(backward)
              for shape in layer.shapes.values()]
    w = (torch.randn(layer.d_in, layer.d_out, device="cuda", dtype=dtype) * 0.02).requires_grad_(backward)

    def run(forward):
        def step():
            if backward:
                forward().backward(dy)
            else:
                with torch.no_grad():
                    forward()
        return step

    results = {"cublas_dense": torch_time(torch, run(lambda: x @ w), repeats)}
    bmm = lambda: layer.forward(x, *params)
    results["torch_bmm"] = torch_time(torch, run(bmm), repeats)
    try:
        compiled = torch.compile(layer.forward)
        results["torch_compile"] = torch_time(torch, run(lambda: compiled(x, *params)), repeats)
    except Exception as error:  # torch.compile needs a working Triton; report, don't stop
        results["torch_compile_error"] = str(error).splitlines()[0]
    return results, layer


def main():
    args = parse_args()
    import torch  # imported here so --help works without PyTorch

    if not torch.cuda.is_available():
        sys.exit("gpu_bench.py: no CUDA device visible to PyTorch")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_layers import Layer

    name = torch.cuda.get_device_name(0)
    peaks = next((v for k, v in PEAKS.items() if k in name), PEAKS["H100"])
    print(f"# device: {name}; rows {args.rows}", flush=True)
    for structure in args.structures.split(","):
        for d in [int(w) for w in args.widths.split(",")]:
            spec = STRUCTURES[structure](d)
            for precision in args.precisions.split(","):
                peak = args.peak_tflops or peaks["bf16" if precision == "bf16" else "fp32"]
                bandwidth = args.bandwidth or peaks["bandwidth"]
                for backward in (False, True):
                    row = {"spec": spec, "precision": precision,
                           "pass": "forward+backward" if backward else "forward"}
                    layer = Layer(spec)
                    # MACs per row: every weight element is used once per row by dense, 2-core
                    # BTT and Monarch (each contraction's label product is its factor's size).
                    macs = sum(math.prod(s) for s in layer.shapes.values())
                    flops = 2.0 * macs * args.rows * (3 if backward else 1)
                    width = 2 if precision == "bf16" else 4
                    params = sum(math.prod(s) for s in layer.shapes.values())
                    bytes_moved = width * (args.rows * (d + d) + params) * (3 if backward else 1)
                    bound_ms = max(flops / (peak * 1e12), bytes_moved / (bandwidth * 1e12)) * 1e3
                    timings = {}
                    try:
                        timings["einjit"] = einjit_time(args, spec, precision, backward)
                    except (RuntimeError, OSError) as error:
                        row["einjit_error"] = str(error)
                    if not args.no_torch:
                        try:
                            torch_results, _ = torch_variants(torch, Layer, spec, args.rows,
                                                              precision, backward, args.repeats)
                            timings.update({k: v for k, v in torch_results.items() if not k.endswith("error")})
                            row.update({k: v for k, v in torch_results.items() if k.endswith("error")})
                        except Exception as error:
                            row["torch_error"] = str(error).splitlines()[0]
                    row["bound_ms"] = bound_ms
                    for key, ms in timings.items():
                        row[key] = {"ms": ms, "tflops": flops / (ms * 1e-3) / 1e12,
                                    "fraction_of_bound": bound_ms / ms}
                    if args.json:
                        print(json.dumps(row), flush=True)
                    else:
                        parts = [f"{key} {v['ms']:.3f} ms {v['tflops']:.1f} TFLOP/s {v['fraction_of_bound']:.2f} of bound"
                                 for key, v in row.items() if isinstance(v, dict)]
                        errors = [f"{k}: {v}" for k, v in row.items() if k.endswith("error")]
                        print(f"{spec:40s} {precision:5s} {row['pass']:17s} bound {bound_ms:.3f} ms | "
                              + " | ".join(parts + errors), flush=True)


if __name__ == "__main__":
    main()
