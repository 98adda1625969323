#!/usr/bin/python3
"""The PyTorch baseline for einjit's training throughput: tokens/s of training steps of a
char-level GPT on the CPU, dense and structured, in the same model and recipe as einjit's.

The model is tests/models/torch_models.py's GPT (the models' contract, the one the C++ GPT
fixtures come from). Its structured layers run in the bmm forms of the papers' reference code
(bench/torch_layers.py: dense, lowrank, monarch, 2-core btt, without norm; their gradients are
autograd's); other structures keep the fixtures' step-by-step forms. In torch 1.13 on this CPU
the BTT training step is dominated by the backward of those bmms over strided views (per-batch
copies inside aten::bmm), so BTT trains slower than dense here. Before anything is timed, every
layer's reference form is checked against the fixtures' form on a few rows (float64); a mismatch
stops the run.

Default setup (issue 6): 4 layers, d_model 256, 4 heads, context 128, batch 32, vocab 96,
float32, AdamW (lr 3e-3, betas 0.9/0.95, one group per learning-rate multiplier: the IR's muP
multiplier for structured-layer parameters, 1 elsewhere; weight decay only on tensors of rank
>= 2), gradient clipping at 1, torch.set_num_threads(2); every linear layer but the head takes
the structure (layers all_but_last). Each step trains on a fresh batch: uniformly random tokens,
or random windows of --corpus (a text file; characters outside printable ASCII + newline are
dropped).

For each structure it runs --warmup untimed steps, then --steps timed steps, and prints
tokens/s (batch * context * steps / total time) and the median step time. The machine's load
average is printed before and after: on a shared machine, numbers taken under load are low.

On a GPU (--device cuda) the model, batches and optimiser live there; --bf16 runs the forward
under torch.autocast(bfloat16) (fp32 master weights, as einjit's --precision bf16), and each
step's time ends with torch.cuda.synchronize().

Usage: torch_train.py [--struct SPEC ...] [--layers all|all_but_last|ffn] [--steps N]
                      [--warmup N] [--corpus FILE] [--json PATH|-] [--device cpu|cuda [--bf16]]
                      [model/recipe options]
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import blas_threads

blas_threads.limit_to_threads_argument()  # before torch loads OpenBLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "models"))
sys.path.insert(0, HERE)
import torch_layers  # noqa: E402
import torch_models  # noqa: E402

# Character vocabulary: newline, then printable ASCII (32..126): 96 symbols.
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))


def corpus_tokens(path):
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    index = {c: i for i, c in enumerate(CHARACTERS)}
    tokens = np.array([index[c] for c in text if c in index], dtype=np.int64)
    return tokens


class Batches:
    """A fresh (tokens, targets) batch every step: random tokens, or random corpus windows."""

    def __init__(self, args, rng):
        self.batch, self.length, self.vocab, self.rng = args.batch, args.context, args.vocab, rng
        self.device = args.device
        self.corpus = None
        if args.corpus:
            self.corpus = corpus_tokens(args.corpus)
            if len(self.corpus) < self.length + 1:
                raise SystemExit(f"torch_train: corpus {args.corpus} has {len(self.corpus)} "
                                 f"usable characters; at least {self.length + 1} are needed")

    def next(self):
        if self.corpus is None:
            sequence = self.rng.integers(0, self.vocab, (self.batch, self.length + 1))
        else:
            starts = self.rng.integers(0, len(self.corpus) - self.length, self.batch)
            sequence = np.stack([self.corpus[s:s + self.length + 1] for s in starts])
        sequence = torch.from_numpy(sequence).to(self.device)
        return sequence[:, :-1], sequence[:, 1:]


def use_reference_forms(model):
    """Runs every structured layer that bench/torch_layers.py has in its reference bmm form,
    after checking that form against the fixtures' on 5 random rows in float64."""
    generator = torch.Generator().manual_seed(0)
    for prefix, module in torch_models.structured_layers(model):
        try:
            baseline = torch_layers.Layer(module.layer.spec)
        except ValueError:
            continue  # not in the baseline (e.g. norm, kron, tt): the fixtures' form stays
        names = list(baseline.shapes)
        reference = lambda rows, params, f=baseline.forward, names=names: \
            f(rows, *(params[name] for name in names))  # noqa: E731
        with torch.no_grad():
            params = {name: getattr(module, name).double() + 0.1 * torch.randn(
                getattr(module, name).shape, generator=generator, dtype=torch.float64)
                for name in module.layer.param_names()}
            rows = torch.randn(5, module.d_in, generator=generator, dtype=torch.float64)
            expected = module.layer.forward(rows, params)
            error = (reference(rows, params) - expected).abs().max().item()
        if error > 1e-12 * max(1.0, expected.abs().max().item()):
            raise SystemExit(f"torch_train: {prefix} ({module.layer.spec}): the reference bmm "
                             f"form differs from the fixtures' form by {error:g}")
        module.rows_forward = reference


def make_optimizer(model, args):
    """AdamW with one group per (learning-rate multiplier, decayed or not)."""
    multipliers = torch_models.lr_multipliers(model)
    groups = {}
    for name, parameter in model.named_parameters():
        decay = args.weight_decay if parameter.dim() >= 2 else 0.0
        key = (multipliers[name], decay)
        groups.setdefault(key, []).append(parameter)
    return torch.optim.AdamW(
        [{"params": params, "lr": args.lr * multiplier, "weight_decay": decay}
         for (multiplier, decay), params in groups.items()],
        lr=args.lr, betas=(args.beta1, args.beta2))


def train(struct, args):
    torch.manual_seed(args.seed)
    config = torch_models.GPTConfig(vocab=args.vocab, context=args.context, nLayer=args.n_layer,
                                    nHead=args.n_head, dModel=args.d_model, struct=struct,
                                    layers=args.layers)
    model = torch_models.GPT(config)
    use_reference_forms(model)  # checked on the CPU in float64, then moved
    model.to(args.device)
    optimizer = make_optimizer(model, args)
    synchronize = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    # (torch 1.13 probes CUDA even for a disabled cuda autocast, so the CPU takes a null context)
    autocast = ((lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)) if args.bf16
                else contextlib.nullcontext)
    batches = Batches(args, np.random.default_rng(args.seed))
    losses, times = [], []
    for step in range(args.warmup + args.steps):
        tokens, targets = batches.next()
        synchronize()
        start = time.perf_counter()
        with autocast():
            loss, _ = model.loss(tokens, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        synchronize()
        elapsed = time.perf_counter() - start
        losses.append(float(loss))
        if step >= args.warmup:
            times.append(elapsed)
    tokens_per_step = args.batch * args.context
    return {
        "struct": struct,
        "layers": args.layers,
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": tokens_per_step * len(times) / sum(times),
        "step_ms_median": 1e3 * statistics.median(times),
        "steps": len(times),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--struct", action="append",
                        help="structure template, repeatable (default: dense and btt(rank=1))")
    parser.add_argument("--layers", default="all_but_last", choices=torch_models.LAYER_CHOICES)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=len(CHARACTERS))
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--beta1", type=float, default=0.9)
    parser.add_argument("--beta2", type=float, default=0.95)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (0: off)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--corpus", help="text file to train on (default: random tokens)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results as JSON to this path ('-': stdout)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--bf16", action="store_true", help="cuda: bfloat16 autocast of the forward")
    args = parser.parse_args()
    if args.bf16 and args.device != "cuda":
        parser.error("--bf16 needs --device cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no GPU")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    if args.corpus and args.vocab != len(CHARACTERS):
        parser.error(f"--corpus uses the {len(CHARACTERS)}-character vocabulary; drop --vocab")

    torch.set_num_threads(args.threads)
    structs = args.struct or ["dense", "btt(rank=1)"]
    load_before = os.getloadavg()
    where = (f"{torch.cuda.get_device_name()} ({'bf16 autocast' if args.bf16 else 'float32'})"
             if args.device == "cuda" else f"{torch.get_num_threads()} threads, float32")
    print(f"torch {torch.__version__}, {where}; "
          f"GPT {args.n_layer} layers, d_model {args.d_model}, {args.n_head} heads, context "
          f"{args.context}, batch {args.batch}, vocab {args.vocab}, layers {args.layers}; "
          f"{args.warmup} warm-up + {args.steps} timed steps; "
          f"{'corpus ' + args.corpus if args.corpus else 'random tokens'}")
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    results = []
    for struct in structs:
        result = train(struct, args)
        results.append(result)
        print(f"{struct:<24} {result['params']:>10,} params  {result['tokens_per_s']:>9,.0f} "
              f"tokens/s  median step {result['step_ms_median']:.0f} ms  loss "
              f"{result['first_loss']:.3f} -> {result['last_loss']:.3f}", flush=True)
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        record = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                  "config": {key: value for key, value in vars(args).items()
                             if key not in ("json", "struct")},
                  "load_average_before": load_before, "load_average_after": load_after,
                  "results": results}
        text = json.dumps(record, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as handle:
                handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
