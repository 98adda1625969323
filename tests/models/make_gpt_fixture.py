#!/usr/bin/python3
"""Whole-model fixtures for einjit's C++ models: one forward/backward step of a tiny GPT,
residual MLP and MLP classifier in PyTorch (torch_models.py, float64, CPU) with random
non-zero weights, written with the loss, the outputs and the gradient of every parameter.

Every parameter is drawn non-zero, including the cores the models' init zeroes (residual
projections, the LM head, the output layer), so that every gradient path is exercised. Weight
normalisation cores are scaled so that RMS(W)/sigma is 0.4, 0.7, 1.6 or 2.5 (the clamp both
active and inactive, never near its kink), gains drawn in [0.5, 1.5].

For each case it writes
  DIR/<case>.npz   every parameter by its contract name; the inputs ("tokens" and "targets" as
                   float64 arrays of integers for the GPT and the classifier, "x" and "y" for
                   the residual MLP); "loss" (shape ()); the outputs ("logits", rows b-major:
                   (B*T, vocab) for the GPT, or "output" (N, 1) for the residual MLP); and
                   "grad.<name>" for every parameter (gradient of the loss).
  DIR/<case>.json  {"model": "gpt"|"resmlp"|"mlp", "config": {...}, "inputs": {...},
                   "params": {name: shape}}; GPT configs use the contract's keys
                   (vocab, context, nLayer, nHead, dModel, struct, layers, qkLayerNorm,
                   residualScale).
  DIR/cases.json   the list of case names.

--self-check compares each case against an independent NumPy implementation: every linear layer
as a dense matrix built entry by entry (make_layer_fixtures.Layer.dense_matrix, weight
normalisation redone in NumPy), attention as explicit loops over (batch, head, position),
LayerNorm / GELU / softmax cross-entropy written out; the losses and outputs must agree to 1e-10
and one entry of every parameter's gradient must match a central finite difference of the NumPy
loss. A mismatch stops the script before anything is written.

Usage: make_gpt_fixture.py --out DIR [--seed S] [--self-check]
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models  # noqa: E402
from torch_models import GPT, GPTConfig, MLPClassifier, ResidualMLP, structures  # noqa: E402

# RMS(W)/sigma of weight-normalised cores, cycled over the cores of a model.
NORM_RATIOS = (2.5, 0.7, 1.6, 0.4)
FD_STEP = 1e-5
# The contract's LayerNorm eps, restated so that the NumPy check owes nothing to torch_models.
LAYERNORM_EPS = 1e-5
FD_ENTRIES = 3  # gradient entries checked per parameter tensor (fewer for smaller tensors)

GPT_CASES = [
    ("gpt_dense", GPTConfig(vocab=96, context=16, nLayer=2, nHead=2, dModel=32), 2, 16),
    ("gpt_btt_norm_qkln", GPTConfig(vocab=96, context=16, nLayer=2, nHead=2, dModel=32,
                                    struct="btt(rank=2, norm)", layers="all", qkLayerNorm=True,
                                    residualScale=math.sqrt(3 / 2)), 2, 16),
    ("gpt_monarch_ffn", GPTConfig(vocab=96, context=16, nLayer=2, nHead=2, dModel=32,
                                  struct="monarch(blocks=4)", layers="ffn"), 2, 16),
    # T < context: only the first T rows of wpe are used (and get gradients).
    ("gpt_lowrank_all_but_last", GPTConfig(vocab=96, context=16, nLayer=2, nHead=2, dModel=32,
                                           struct="lowrank(rank=4)", layers="all_but_last"),
     2, 12),
]
# (name, struct, rows): teacher-task shapes, input 8, width 16, 3 blocks, output 1.
RESMLP_CASES = [("resmlp_dense", "dense", 8), ("resmlp_btt", "btt(rank=2)", 8)]
RESMLP_SHAPE = {"inputs": 8, "width": 16, "blocks": 3, "outputs": 1}
# (name, struct, rows): 4x4 images, width 16, 2 hidden layers, 10 classes.
MLP_CASES = [("mlp_kron", "kron", 6)]
MLP_SHAPE = {"pixels": 16, "width": 16, "hidden": 2, "classes": 10}


# --------------------------------------------------------------------------------------------
# Random weights and the PyTorch step

def random_weights(model, rng):
    """Non-zero float64 values for every parameter, by name."""
    weights = {}
    layers = dict(torch_models.structured_layers(model))
    norm_core = 0
    for prefix, module in layers.items():
        layer = module.layer
        ratios = None
        if layer.norm:
            ratios = {}
            for core in layer.cores:
                ratios[core.name] = NORM_RATIOS[norm_core % len(NORM_RATIOS)]
                norm_core += 1
        for name, value in structures.random_params(layer, rng, ratios).items():
            weights[f"{prefix}.{name}"] = np.asarray(value, dtype=np.float64)
    for name, parameter in model.named_parameters():
        if name in weights:
            continue
        shape = tuple(parameter.shape)
        if name.endswith(".gamma"):
            weights[name] = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(".beta"):
            weights[name] = rng.normal(0.0, 0.2, shape)
        elif name in ("wte", "wpe"):
            weights[name] = rng.normal(0.0, 0.5, shape)
        else:
            raise AssertionError(f"no rule to draw parameter {name}")
    return {name: weights[name] for name, _ in model.named_parameters()}


def torch_step(model, weights, inputs):
    """Loss, output and gradients of the PyTorch model with the given weights (float64)."""
    model = model.double()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(torch.from_numpy(weights[name]))
    model.zero_grad()
    loss, output = model.loss(*inputs)
    loss.backward()
    grads = {name: parameter.grad.numpy().copy() for name, parameter in model.named_parameters()}
    return float(loss), output.detach().numpy().copy(), grads


# --------------------------------------------------------------------------------------------
# The independent NumPy implementation (self-check)

def normalised_cores(layer, values):
    """W~ = gamma W / max(1, RMS(W)/sigma) for each core (just W without norm)."""
    cores = {}
    for core in layer.cores:
        w = values[core.name]
        if layer.norm:
            rms = math.sqrt(np.mean(w * w) + layer.norm_eps)
            w = w / max(1.0, rms / core.sigma)
            if layer.gains:
                w = w * values[core.name + "_gamma"]
        cores[core.name] = w
    return cores


def without_norm(spec):
    name, _, rest = spec.partition("(")
    items = [item.strip() for item in rest.rstrip(")").split(",")]
    return f"{name}({', '.join(i for i in items if i not in ('norm', 'norm=true'))})"


class DenseMatrices:
    """Each structured layer of a model as a dense (d_in, d_out) NumPy matrix, built entry by
    entry from its cores; rebuilt only for the layer whose parameter changed."""

    def __init__(self, model):
        self.layers = {prefix: module.layer for prefix, module in
                       torch_models.structured_layers(model)}
        self.plain = {prefix: structures.Layer(without_norm(layer.spec))
                      for prefix, layer in self.layers.items()}
        self.cache = {}

    def build(self, prefix, weights):
        layer = self.layers[prefix]
        values = {name: weights[f"{prefix}.{name}"] for name in layer.param_names()}
        cores = {name: torch.from_numpy(w) for name, w in normalised_cores(layer, values).items()}
        return self.plain[prefix].dense_matrix(cores)

    def all(self, weights, changed=None):
        for prefix in self.layers:
            if prefix not in self.cache or (changed is not None and
                                            changed.startswith(prefix + ".")):
                self.cache[prefix] = self.build(prefix, weights)
        return self.cache


def np_layernorm(x, gamma, beta):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYERNORM_EPS) * gamma + beta


def np_gelu_tanh(u):
    return 0.5 * u * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))


def np_cross_entropy(logits, targets):
    """Mean over rows of logsumexp(logits) - logits[target]."""
    total = 0.0
    for row, target in zip(logits, targets):
        top = row.max()
        total += top + math.log(np.exp(row - top).sum()) - row[int(target)]
    return total / len(logits)


def np_gpt_loss(config, w, m, tokens, targets):
    batch, length = tokens.shape
    d, heads, hd = config.dModel, config.nHead, config.headDim
    x = np.zeros((batch, length, d))
    for b in range(batch):
        for t in range(length):
            x[b, t] = w["wte"][int(tokens[b, t])] + w["wpe"][t]
    for i in range(config.nLayer):
        p = f"blocks.{i}."
        h = np_layernorm(x, w[p + "ln1.gamma"], w[p + "ln1.beta"])
        q, k, v = (h @ m[p + "attn." + name] for name in ("q", "k", "v"))
        a = np.zeros_like(x)
        for b in range(batch):
            for head in range(heads):
                cols = slice(head * hd, (head + 1) * hd)
                qh, kh, vh = q[b, :, cols], k[b, :, cols], v[b, :, cols]
                if config.qkLayerNorm:
                    qh = np_layernorm(qh, w[p + "attn.q_ln.gamma"], w[p + "attn.q_ln.beta"])
                    kh = np_layernorm(kh, w[p + "attn.k_ln.gamma"], w[p + "attn.k_ln.beta"])
                    kh = kh * 8.0 / math.sqrt(hd)
                for t in range(length):
                    scores = np.array([qh[t] @ kh[s] for s in range(t + 1)]) / math.sqrt(hd)
                    probs = np.exp(scores - scores.max())
                    probs /= probs.sum()
                    a[b, t, cols] = sum(probs[s] * vh[s] for s in range(t + 1))
        x = x + config.residualScale * (a @ m[p + "attn.proj"])
        h = np_layernorm(x, w[p + "ln2.gamma"], w[p + "ln2.beta"])
        x = x + config.residualScale * (np_gelu_tanh(h @ m[p + "mlp.fc"]) @ m[p + "mlp.proj"])
    logits = np_layernorm(x, w["ln_f.gamma"], w["ln_f.beta"]) @ m["head"]
    logits = logits.reshape(-1, config.vocab)
    return np_cross_entropy(logits, targets.reshape(-1)), logits


def np_resmlp_loss(n_blocks, w, m, x, y):
    h = np_layernorm(np_gelu_tanh(x @ m["input"]), w["input_ln.gamma"], w["input_ln.beta"])
    for i in range(n_blocks):
        p = f"blocks.{i}."
        u = np_layernorm(h, w[p + "ln.gamma"], w[p + "ln.beta"])
        h = h + np_gelu_tanh(u @ m[p + "fc"]) @ m[p + "proj"]
    prediction = h @ m["output"]
    return float(np.mean((prediction - y) ** 2)), prediction


def np_mlp_loss(n_hidden, w, m, x, targets):
    h = np.maximum(x @ m["input"], 0.0)
    for i in range(n_hidden):
        h = np.maximum(h @ m[f"hidden.{i}"], 0.0)
    logits = h @ m["output"]
    return np_cross_entropy(logits, targets), logits


def self_check(case, model, weights, reference_loss, loss, output, grads, rng):
    """NumPy forward vs PyTorch's, and a finite difference of the NumPy loss vs one entry of
    every PyTorch gradient."""
    matrices = DenseMatrices(model)
    np_loss, np_output = reference_loss(weights, matrices.all(weights))
    if abs(np_loss - loss) > 1e-10 * max(1.0, abs(loss)):
        raise AssertionError(f"{case}: loss {loss!r}, independent NumPy loss {np_loss!r}")
    error = np.max(np.abs(np_output - output.reshape(np_output.shape)))
    if error > 1e-10 * max(1.0, np.max(np.abs(output))):
        raise AssertionError(f"{case}: outputs differ from the NumPy forward by {error:g}")
    worst, checked = 0.0, 0
    for name, value in weights.items():
        for flat in rng.choice(value.size, min(FD_ENTRIES, value.size), replace=False):
            index = np.unravel_index(flat, value.shape)
            results = []
            for step in (FD_STEP, -FD_STEP):
                shifted = dict(weights)
                shifted[name] = value.copy()
                shifted[name][index] += step
                results.append(reference_loss(shifted, matrices.all(shifted, changed=name))[0])
            matrices.all(weights, changed=name)
            fd = (results[0] - results[1]) / (2 * FD_STEP)
            analytic = grads[name][index]
            error = abs(fd - analytic)
            worst, checked = max(worst, error), checked + 1
            if error > 1e-7 + 1e-5 * abs(analytic):
                raise AssertionError(f"{case}: d loss / d {name}{list(index)}: PyTorch "
                                     f"{analytic!r}, finite difference of the NumPy loss {fd!r}")
    print(f"  {case}: NumPy forward agrees; {checked} gradient entries of {len(weights)} "
          f"parameters match finite differences (largest error {worst:.1e})")


# --------------------------------------------------------------------------------------------
# Cases

def gpt_case(config, batch, length, rng):
    model = GPT(config)
    weights = random_weights(model, rng)
    sequence = rng.integers(0, config.vocab, (batch, length + 1))
    tokens, targets = sequence[:, :-1], sequence[:, 1:]
    inputs = (torch.from_numpy(tokens), torch.from_numpy(targets))
    arrays = {"tokens": tokens.astype(np.float64), "targets": targets.astype(np.float64)}
    loss, logits, grads = torch_step(model, weights, inputs)
    logits = logits.reshape(batch * length, config.vocab)
    description = {"model": "gpt", "config": config.to_dict(),
                   "inputs": {"batch": batch, "length": length}}
    reference = lambda w, m: np_gpt_loss(config, w, m, tokens, targets)  # noqa: E731
    return model, weights, arrays, loss, ("logits", logits), grads, description, reference


def resmlp_case(struct, rows, rng):
    shape = RESMLP_SHAPE
    model = ResidualMLP(shape["inputs"], shape["width"], shape["blocks"], struct,
                        shape["outputs"])
    weights = random_weights(model, rng)
    x = rng.standard_normal((rows, shape["inputs"]))
    y = rng.standard_normal((rows, shape["outputs"]))
    loss, prediction, grads = torch_step(model, weights, (torch.from_numpy(x),
                                                          torch.from_numpy(y)))
    description = {"model": "resmlp", "config": dict(shape, struct=struct),
                   "inputs": {"rows": rows}}
    reference = lambda w, m: np_resmlp_loss(shape["blocks"], w, m, x, y)  # noqa: E731
    return model, weights, {"x": x, "y": y}, loss, ("output", prediction), grads, description, \
        reference


def mlp_case(struct, rows, rng):
    shape = MLP_SHAPE
    model = MLPClassifier(shape["pixels"], shape["width"], shape["hidden"], shape["classes"],
                          struct)
    weights = random_weights(model, rng)
    x = rng.standard_normal((rows, shape["pixels"]))
    targets = rng.integers(0, shape["classes"], rows)
    loss, logits, grads = torch_step(model, weights, (torch.from_numpy(x),
                                                      torch.from_numpy(targets)))
    description = {"model": "mlp", "config": dict(shape, struct=struct),
                   "inputs": {"rows": rows}}
    reference = lambda w, m: np_mlp_loss(shape["hidden"], w, m, x, targets)  # noqa: E731
    return model, weights, {"x": x, "targets": targets.astype(np.float64)}, loss, \
        ("logits", logits), grads, description, reference


def all_cases(rng):
    for name, config, batch, length in GPT_CASES:
        yield name, gpt_case(config, batch, length, rng)
    for name, struct, rows in RESMLP_CASES:
        yield name, resmlp_case(struct, rows, rng)
    for name, struct, rows in MLP_CASES:
        yield name, mlp_case(struct, rows, rng)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=11, help="random seed")
    parser.add_argument("--self-check", action="store_true",
                        help="check every case against the independent NumPy implementation")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    check_rng = np.random.default_rng(args.seed + 1)
    written = {}
    for case, (model, weights, inputs, loss, (output_name, output), grads, description,
               reference) in all_cases(rng):
        if args.self_check:
            self_check(case, model, weights, reference, loss, output, grads, check_rng)
        arrays = dict(weights)
        arrays.update(inputs)
        arrays["loss"] = np.array(loss)
        arrays[output_name] = output
        arrays.update({f"grad.{name}": grad for name, grad in grads.items()})
        description["params"] = {name: list(value.shape) for name, value in weights.items()}
        written[case] = (arrays, description)

    os.makedirs(args.out, exist_ok=True)
    for case, (arrays, description) in written.items():
        np.savez(os.path.join(args.out, case + ".npz"), **arrays)
        with open(os.path.join(args.out, case + ".json"), "w") as handle:
            json.dump(description, handle, indent=1)
    with open(os.path.join(args.out, "cases.json"), "w") as handle:
        json.dump({"seed": args.seed, "cases": list(written)}, handle, indent=1)
    print(f"make_gpt_fixture: {len(written)} cases written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
