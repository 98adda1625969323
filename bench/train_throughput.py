#!/usr/bin/python3
"""Training throughput, einjit against PyTorch: tokens/s of training steps of the issue-6 char-GPT
(4 layers, d_model 256, 4 heads, context 128, batch 32, float32, AdamW lr 3e-3, clip 1, 2 threads;
the structure on every linear layer but the head), dense and btt(rank=1), on the same corpus.

einjit runs as `einjit train` (EINJIT_THREADS=--threads) with one metrics line per step; its
tokens/s is batch * context * timed steps over the training time of the timed steps (the
`seconds` of metrics.jsonl, so the first --warmup steps, which compile or load the kernels, are
not counted). PyTorch runs as bench/torch_train.py with the same --warmup and --steps. Both train
on random windows of --corpus. The machine's load average is printed before and after: numbers
taken on a shared machine are low, and the two sides may be slowed differently.

On a GPU machine: --device cuda [--precision bf16] runs both on the GPU, and --model gpt2-124m
takes the GPT-2 124M shape (12 layers, d_model 768, 12 heads, context 1024, batch 8; the char
vocabulary of 96, so about 85M parameters) with dense and btt(rank=4) by default.

Usage: train_throughput.py EINJIT_BINARY [--steps N] [--warmup N] [--threads N] [--corpus FILE]
                           [--struct SPEC ...] [--model char-gpt|gpt2-124m]
                           [--device cpu|cuda] [--precision f32|bf16]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

MODELS = {
    "char-gpt": {"n_layer": 4, "d_model": 256, "n_head": 4, "context": 128, "batch": 32},
    "gpt2-124m": {"n_layer": 12, "d_model": 768, "n_head": 12, "context": 1024, "batch": 8},
}
DEFAULT_STRUCTS = {"char-gpt": ["dense", "btt(rank=1)"], "gpt2-124m": ["dense", "btt(rank=4)"]}
MODEL = MODELS["char-gpt"]  # set from --model in main()
LAYERS = "all_but_last"
LR = 3e-3


def load_average():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def einjit_tokens_per_s(binary, struct, args, scratch):
    """Trains with `einjit train` and returns tokens/s over the timed steps."""
    out = os.path.join(scratch, "einjit-" + "".join(c if c.isalnum() else "_" for c in struct))
    command = [binary, "train", "--model", "gpt2", "--struct", struct, "--layers", LAYERS,
               "--n-layer", str(MODEL["n_layer"]), "--d-model", str(MODEL["d_model"]),
               "--n-head", str(MODEL["n_head"]), "--context", str(MODEL["context"]),
               "--batch", str(MODEL["batch"]), "--lr", str(LR), "--clip", "1",
               "--steps", str(args.warmup + args.steps), "--log-every", "1", "--eval-every", "0",
               "--checkpoint-every", "0", "--data", args.corpus, "--out", out,
               "--device", args.device, "--precision", args.precision]
    environment = dict(os.environ, EINJIT_THREADS=str(args.threads))
    run = subprocess.run(command, env=environment, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"train_throughput: einjit train failed ({run.returncode}):\n"
                         f"{run.stdout}{run.stderr}")
    with open(os.path.join(out, "metrics.jsonl")) as handle:
        seconds = {entry["step"]: entry["seconds"] for entry in map(json.loads, handle)}
    start = seconds[args.warmup] if args.warmup > 0 else 0.0
    elapsed = seconds[args.warmup + args.steps] - start
    return MODEL["batch"] * MODEL["context"] * args.steps / elapsed


def torch_environment():
    """The environment for PyTorch: on an AVX-512 CPU, its OpenBLAS with AVX-512 kernels.

    This project's machines set OPENBLAS_CORETYPE=Haswell, which limits OpenBLAS to its AVX2
    kernels on their AVX-512 CPUs, about half the GFLOP/s; the baseline should be the best the
    library does (see useBestOpenblasKernels in bench/Baselines.h, whose rule this follows,
    EINJIT_BENCH_OPENBLAS_CORETYPE included).
    """
    environment = dict(os.environ)
    chosen = environment.get("EINJIT_BENCH_OPENBLAS_CORETYPE")
    if chosen:
        environment["OPENBLAS_CORETYPE"] = chosen
        return environment
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    avx512_cores = ("skylakex", "cooperlake", "sapphirerapids")
    if (all(f in flags for f in ("avx512f", "avx512bw", "avx512dq", "avx512vl"))
            and environment.get("OPENBLAS_CORETYPE", "").lower() not in avx512_cores):
        environment["OPENBLAS_CORETYPE"] = "SkylakeX"
    return environment


def torch_tokens_per_s(structs, args, scratch):
    """Runs bench/torch_train.py once for all structures; returns {struct: tokens/s}."""
    record_path = os.path.join(scratch, "torch.json")
    command = [sys.executable, os.path.join(HERE, "torch_train.py"), "--layers", LAYERS,
               "--n-layer", str(MODEL["n_layer"]), "--d-model", str(MODEL["d_model"]),
               "--n-head", str(MODEL["n_head"]), "--context", str(MODEL["context"]),
               "--batch", str(MODEL["batch"]), "--lr", str(LR), "--clip", "1",
               "--threads", str(args.threads), "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--corpus", args.corpus, "--json", record_path,
               "--device", args.device] + (["--bf16"] if args.precision == "bf16" else [])
    for struct in structs:
        command += ["--struct", struct]
    run = subprocess.run(command, env=torch_environment(), capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"train_throughput: torch_train.py failed ({run.returncode}):\n"
                         f"{run.stdout}{run.stderr}")
    with open(record_path) as handle:
        record = json.load(handle)
    return {result["struct"]: result["tokens_per_s"] for result in record["results"]}, record["torch"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("einjit", help="the built einjit binary")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--corpus", default=os.path.join(REPO, "data", "sotu.txt"))
    parser.add_argument("--struct", action="append",
                        help="structure template, repeatable (default: dense and btt(rank=1); "
                             "gpt2-124m: dense and btt(rank=4))")
    parser.add_argument("--model", default="char-gpt", choices=sorted(MODELS))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="f32", choices=("f32", "bf16"))
    args = parser.parse_args()
    global MODEL
    MODEL = MODELS[args.model]
    if args.precision == "bf16" and args.device != "cuda":
        parser.error("--precision bf16 needs --device cuda")
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--steps and --threads must be at least 1, --warmup at least 0")
    if not os.access(args.einjit, os.X_OK):
        parser.error(f"{args.einjit} is not an executable (build the einjit target first)")
    if not os.path.isfile(args.corpus):
        parser.error(f"corpus {args.corpus} not found: run ./setup.sh or scripts/fetch_data.sh")
    args.corpus = os.path.abspath(args.corpus)
    structs = args.struct or DEFAULT_STRUCTS[args.model]

    print(f"{args.model} on {args.device} ({args.precision}): GPT {MODEL['n_layer']} layers, d_model {MODEL['d_model']}, {MODEL['n_head']} heads, "
          f"context {MODEL['context']}, batch {MODEL['batch']}, AdamW, layers {LAYERS}, "
          f"{args.threads} threads; {args.warmup} warm-up + {args.steps} timed steps on "
          f"{os.path.relpath(args.corpus, REPO)}")
    print(f"load average before: {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="einjit-train-bench-") as scratch:
        ours = {}
        for struct in structs:
            ours[struct] = einjit_tokens_per_s(args.einjit, struct, args, scratch)
            print(f"einjit  {struct:<16} {ours[struct]:>9,.0f} tokens/s  (load {load_average()})",
                  flush=True)
        theirs, torch_version = torch_tokens_per_s(structs, args, scratch)
        for struct in structs:
            print(f"torch   {struct:<16} {theirs[struct]:>9,.0f} tokens/s", flush=True)
    print(f"load average after: {load_average()}")

    dense_torch = theirs.get("dense")
    print(f"\n{'structure':<16} {'einjit tok/s':>13} {'torch ' + torch_version + ' tok/s':>20} "
          f"{'einjit/torch':>13}  target")
    for struct in structs:
        if struct == "dense":
            target, met = "einjit dense >= torch dense", ours[struct] >= theirs[struct]
        elif dense_torch is not None:
            target, met = "einjit >= 2x torch dense", ours[struct] >= 2 * dense_torch
        else:
            target, met = "", None
        verdict = "" if met is None else (" (met)" if met else " (NOT met)")
        print(f"{struct:<16} {ours[struct]:>13,.0f} {theirs[struct]:>20,.0f} "
              f"{ours[struct] / theirs[struct]:>13.2f}  {target}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
