#!/usr/bin/python3
"""PyTorch versions of einjit's three models (GPT, residual MLP, MLP classifier), written from
the models' contract that einjit's C++ models follow (issue 6), on top of the independent
structured layers of tests/fixtures/make_layer_fixtures.py.

Parameter names are the contract's: a model's state_dict keys are exactly the names einjit's
C++ models use (wte, blocks.0.attn.q.W0, blocks.0.attn.q.W0_gamma, ln_f.gamma, head.W, ...).
Linear layers have no biases; a structured layer's parameters are its IR parameters
(docs/layouts.md) under the layer's name.

Used by make_gpt_fixture.py (float64 fixtures for the C++ models) and bench/torch_train.py
(the training-throughput baseline).
"""

import math
import os
import re
import sys
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import make_layer_fixtures as structures  # noqa: E402

LAYERNORM_EPS = 1e-5
STRUCTURE_ALIASES = {"low_rank": "lowrank", "kronecker": "kron", "einsum": "theta"}
# Structures whose rank einjit defaults to 1 (docs/layouts.md); make_layer_fixtures requires it.
RANK_DEFAULTS_TO_ONE = {"btt", "tt"}
LAYER_CHOICES = ("all", "all_but_last", "ffn")


def parse_template(template):
    """'btt(rank=2, norm)' -> ('btt', ['rank=2', 'norm']); a bare name has no arguments."""
    match = re.fullmatch(r"\s*(\w+)\s*(?:\((.*)\))?\s*", template, re.S)
    if not match:
        raise ValueError(f"malformed structure template {template!r}; expected name or "
                         "name(key=value, ...), e.g. 'btt(rank=4, norm)'")
    name = match.group(1).lower()
    items = [item.strip() for item in (match.group(2) or "").split(",")]
    return STRUCTURE_ALIASES.get(name, name), [item for item in items if item]


def layer_spec(template, d_in, d_out):
    """A structure template and a layer's sizes -> the full spec make_layer_fixtures.Layer takes:
    'btt(rank=2, norm)', 32, 128 -> 'btt(in=32, out=128, rank=2, norm)'. `base=` (the muP base
    width) changes only init scales and learning rates, never the forward, so it is dropped."""
    name, items = parse_template(template)
    args = []
    keys = set()
    for item in items:
        key = item.partition("=")[0].strip()
        if key in ("in", "out"):
            raise ValueError(f"structure template {template!r} sets '{key}': a model's layer "
                             "sizes come from the model")
        keys.add(key)
        if key != "base":
            args.append(item)
    if name in RANK_DEFAULTS_TO_ONE and "rank" not in keys:
        args.append("rank=1")
    return f"{name}({', '.join([f'in={d_in}', f'out={d_out}'] + args)})"


def without_norm_gains(template):
    """With QK-LayerNorm the reference gives W_Q and W_K no weight-norm gains:
    'btt(rank=4, norm)' -> 'btt(rank=4, norm, gain=false)' (templates that say `gain` themselves
    are kept), as models/Gpt.cpp does."""
    _, items = parse_template(template)
    keys = {item.partition("=")[0].strip(): item.partition("=")[2].strip() or "true" for item in items}
    if keys.get("norm") != "true" or "gain" in keys:
        return template
    close = template.rindex(")")
    return template[:close] + ", gain=false" + template[close:]


class StructuredLinear(nn.Module):
    """y = x W for the structured W of a template; parameters named as the IR names them (W,
    W0, W1, U, V, L, R, G1, ..., and `<core>_gamma` with norm). `zero_last`: the residual/head
    rule, the last core starts at zero."""

    def __init__(self, template, d_in, d_out, zero_last=False):
        super().__init__()
        self.d_in, self.d_out, self.zero_last = d_in, d_out, zero_last
        self.layer = structures.Layer(layer_spec(template, d_in, d_out))
        # (rows (N, d_in), {name: parameter}) -> (N, d_out). bench/torch_train.py replaces it
        # with the papers' reference bmm forms (bench/torch_layers.py) where those exist.
        self.rows_forward = self.layer.forward
        for name, shape in self.layer.param_shapes().items():
            self.register_parameter(name, nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def reset_parameters(self):
        """muP init: every core N(0, sigma_f^2), the last one zero when zero_last; gains 1."""
        with torch.no_grad():
            for index, core in enumerate(self.layer.cores):
                weight = getattr(self, core.name)
                if self.zero_last and index == len(self.layer.cores) - 1:
                    weight.zero_()
                else:
                    weight.normal_(0.0, core.sigma)
            if self.layer.gains:
                for core in self.layer.cores:
                    getattr(self, core.name + "_gamma").fill_(1.0)

    def lr_multipliers(self):
        """The IR's Adam learning-rate multiplier of each parameter (muP, base width = d_in):
        kappa_f = d_in / (d_in_f * number of cores); gains 1."""
        multipliers = {core.name: self.d_in / (core.d_in_f * len(self.layer.cores))
                       for core in self.layer.cores}
        if self.layer.gains:
            multipliers.update({core.name + "_gamma": 1.0 for core in self.layer.cores})
        return multipliers

    def forward(self, x):
        params = {name: getattr(self, name) for name in self.layer.param_names()}
        rows = x.reshape(-1, self.d_in)
        return self.rows_forward(rows, params).reshape(*x.shape[:-1], self.d_out)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis, eps 1e-5, parameters gamma (init 1) and beta (init 0)."""

    def __init__(self, width):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))
        self.beta = nn.Parameter(torch.zeros(width))

    def forward(self, x):
        return F.layer_norm(x, self.gamma.shape, self.gamma, self.beta, LAYERNORM_EPS)


def gelu_tanh(u):
    return F.gelu(u, approximate="tanh")


# --------------------------------------------------------------------------------------------
# GPT

@dataclass
class GPTConfig:
    """The contract's GPT configuration (same key names as the C++ side)."""
    vocab: int
    context: int
    nLayer: int
    nHead: int
    dModel: int
    struct: str = "dense"
    layers: str = "all"
    qkLayerNorm: bool = False
    residualScale: float = 1.0

    def __post_init__(self):
        if self.layers not in LAYER_CHOICES:
            raise ValueError(f"layers must be one of {LAYER_CHOICES}, got {self.layers!r}")
        if self.dModel % self.nHead:
            raise ValueError(f"dModel {self.dModel} is not a multiple of nHead {self.nHead}")

    @property
    def headDim(self):
        return self.dModel // self.nHead

    def template(self, role):
        """The structure of one linear layer: role is q, k, v, attn_proj, fc, fc_proj or head."""
        if self.layers == "all":
            structured = True
        elif self.layers == "all_but_last":
            structured = role != "head"
        else:
            structured = role in ("fc", "fc_proj")
        return self.struct if structured else "dense"

    def to_dict(self):
        return asdict(self)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        d, self.n_head, self.head_dim = config.dModel, config.nHead, config.headDim
        self.qk_layernorm = config.qkLayerNorm
        qk = without_norm_gains if self.qk_layernorm else (lambda template: template)
        self.q = StructuredLinear(qk(config.template("q")), d, d)
        self.k = StructuredLinear(qk(config.template("k")), d, d)
        self.v = StructuredLinear(config.template("v"), d, d)
        if self.qk_layernorm:
            self.q_ln = LayerNorm(self.head_dim)
            self.k_ln = LayerNorm(self.head_dim)
        self.proj = StructuredLinear(config.template("attn_proj"), d, d, zero_last=True)

    def forward(self, x):
        batch, length, d = x.shape
        split = lambda t: t.reshape(batch, length, self.n_head, self.head_dim)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        if self.qk_layernorm:
            q = self.q_ln(q)
            k = self.k_ln(k) * (8.0 / math.sqrt(self.head_dim))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, headDim)
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
        weights = torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1)
        a = (weights @ v).transpose(1, 2).reshape(batch, length, d)
        return self.proj(a)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.dModel
        self.fc = StructuredLinear(config.template("fc"), d, 4 * d)
        self.proj = StructuredLinear(config.template("fc_proj"), 4 * d, d, zero_last=True)

    def forward(self, x):
        return self.proj(gelu_tanh(self.fc(x)))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.residual_scale = config.residualScale
        self.ln1 = LayerNorm(config.dModel)
        self.attn = Attention(config)
        self.ln2 = LayerNorm(config.dModel)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.residual_scale * self.attn(self.ln1(x))
        return x + self.residual_scale * self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Parameter(torch.randn(config.vocab, config.dModel) * 0.02)
        self.wpe = nn.Parameter(torch.randn(config.context, config.dModel) * 0.02)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.nLayer))
        self.ln_f = LayerNorm(config.dModel)
        self.head = StructuredLinear(config.template("head"), config.dModel, config.vocab,
                                     zero_last=True)

    def forward(self, tokens):
        """tokens (B, T) integers -> logits (B, T, vocab)."""
        length = tokens.shape[1]
        if length > self.config.context:
            raise ValueError(f"sequence length {length} exceeds the context {self.config.context}")
        x = self.wte[tokens] + self.wpe[:length]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def loss(self, tokens, targets):
        """Mean cross-entropy over all B*T positions, and the logits."""
        logits = self.forward(tokens)
        return F.cross_entropy(logits.reshape(-1, self.config.vocab), targets.reshape(-1)), logits


# --------------------------------------------------------------------------------------------
# Residual MLP (teacher regression) and MLP classifier

class ResidualBlock(nn.Module):
    def __init__(self, struct, width):
        super().__init__()
        self.ln = LayerNorm(width)
        self.fc = StructuredLinear(struct, width, 4 * width)
        self.proj = StructuredLinear(struct, 4 * width, width, zero_last=True)

    def forward(self, x):
        return x + self.proj(gelu_tanh(self.fc(self.ln(x))))


class ResidualMLP(nn.Module):
    """input Linear (dense) -> GELU -> LayerNorm, pre-LN residual blocks (only fc/proj take the
    structure), output Linear (dense, zero-init). GELU is the tanh form, as in the GPT."""

    def __init__(self, d_in, width, n_blocks, struct="dense", d_out=1):
        super().__init__()
        self.input = StructuredLinear("dense", d_in, width)
        self.input_ln = LayerNorm(width)
        self.blocks = nn.ModuleList(ResidualBlock(struct, width) for _ in range(n_blocks))
        self.output = StructuredLinear("dense", width, d_out, zero_last=True)

    def forward(self, x):
        x = self.input_ln(gelu_tanh(self.input(x)))
        for block in self.blocks:
            x = block(x)
        return self.output(x)

    def loss(self, x, y):
        """Mean squared error, and the predictions."""
        prediction = self.forward(x)
        return F.mse_loss(prediction, y), prediction


class MLPClassifier(nn.Module):
    """input Linear (dense) -> ReLU, hidden Linear(width -> width, struct) -> ReLU each,
    output Linear (dense); cross-entropy."""

    def __init__(self, pixels, width, n_hidden, classes, struct="dense"):
        super().__init__()
        self.input = StructuredLinear("dense", pixels, width)
        self.hidden = nn.ModuleList(StructuredLinear(struct, width, width)
                                    for _ in range(n_hidden))
        self.output = StructuredLinear("dense", width, classes)

    def forward(self, x):
        x = torch.relu(self.input(x))
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.output(x)

    def loss(self, x, targets):
        """Mean cross-entropy, and the logits."""
        logits = self.forward(x)
        return F.cross_entropy(logits, targets), logits


def structured_layers(model):
    """(qualified name, StructuredLinear) of every linear layer of a model."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, StructuredLinear)]


def lr_multipliers(model):
    """Parameter name -> the recipe's learning-rate multiplier: the IR's for structured-layer
    parameters, 1 for embeddings and LayerNorms."""
    result = {name: 1.0 for name, _ in model.named_parameters()}
    for prefix, layer in structured_layers(model):
        for name, multiplier in layer.lr_multipliers().items():
            result[f"{prefix}.{name}"] = multiplier
    return result
