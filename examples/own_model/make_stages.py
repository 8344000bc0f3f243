#!/usr/bin/env python3
"""Your own model for `dualpipe train --stages`: a small GPT-style transformer,
cut into pipeline stages, each scripted and saved as TorchScript, plus a data
file of inputs and targets.

    python3 make_stages.py --out DIR [--stages 4] [--layers 4] [--hidden 32]
                           [--heads 4] [--seq-len 16] [--vocab 16] [--dtype float64]

writes DIR/stage0.pt .. DIR/stage<S-1>.pt and DIR/data.pt. Stage 0 holds the
embeddings, the last stage the final LayerNorm and the LM head, and the blocks
are spread over the stages (later stages get the extra ones). Every stage takes
and returns one tensor; between stages travels [batch, seq_len, hidden].

The data are number sequences: row i starts at a random token a and steps by a
random k in 1..3 (mod vocab); the targets are the inputs shifted by one. A
transformer learns to read k from the context, so the loss falls well below
log(vocab). data.pt is torch.save({"inputs": X, "targets": Y}) with X and Y
int64 [samples, seq_len].
"""
import argparse
import math
import os
from collections import OrderedDict

import torch
from torch import nn


class Embed(nn.Module):
    def __init__(self, vocab: int, d: int, seq: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)

    def forward(self, ids):
        positions = torch.arange(ids.size(1), device=ids.device)
        return self.tok(ids) + self.pos(positions)


class Block(nn.Module):
    """Pre-LayerNorm block: causal self-attention, then an MLP d -> 4d -> d."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d, bias=False)
        self.out = nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        b, t, d = x.size(0), x.size(1), x.size(2)
        hd = d // self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, -1)
        q = q.reshape(b, t, self.heads, hd).transpose(1, 2)
        k = k.reshape(b, t, self.heads, hd).transpose(1, 2)
        v = v.reshape(b, t, self.heads, hd).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(hd)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.out(nn.functional.gelu(self.fc(self.ln2(x))))


class Head(nn.Module):
    def __init__(self, d: int, vocab: int):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.lm = nn.Linear(d, vocab, bias=False)

    def forward(self, x):
        return self.lm(self.ln(x))


def make_stages(n_stages, layers, d, heads, seq, vocab):
    """The whole model's parts, cut into n_stages nn.Sequential stages."""
    parts = [[] for _ in range(n_stages)]
    parts[0].append(("embed", Embed(vocab, d, seq)))
    for i in range(layers):
        parts[i * n_stages // layers].append((f"block{i}", Block(d, heads)))
    parts[-1].append(("head", Head(d, vocab)))
    return [nn.Sequential(OrderedDict(p)) for p in parts]


def make_data(samples, seq, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab, (samples, 1), generator=g)
    step = torch.randint(1, 4, (samples, 1), generator=g)
    tokens = (start + step * torch.arange(seq + 1)) % vocab
    return {"inputs": tokens[:, :-1].contiguous(), "targets": tokens[:, 1:].contiguous()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=16)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    dtype = getattr(torch, a.dtype)
    for s, stage in enumerate(make_stages(a.stages, a.layers, a.hidden, a.heads, a.seq_len, a.vocab)):
        torch.jit.script(stage.to(dtype)).save(os.path.join(a.out, f"stage{s}.pt"))
    torch.save(make_data(a.samples, a.seq_len, a.vocab, a.seed), os.path.join(a.out, "data.pt"))
    print(f"wrote {a.stages} stages and data.pt to {a.out}")


if __name__ == "__main__":
    main()
