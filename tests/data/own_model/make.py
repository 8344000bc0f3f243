#!/usr/bin/env python3
"""Makes the TorchScript test files of tests/runtime/test_torchscript.cpp
(python3 with torch; run from anywhere): a 4-stage float64 transformer and its
data, made by the worked example's script, and the bad inputs the tests refuse."""
import os
import subprocess
import sys

import torch
from torch import nn

here = os.path.dirname(os.path.abspath(__file__))
example = os.path.join(here, "..", "..", "..", "examples", "own_model", "make_stages.py")
subprocess.run([sys.executable, example, "--out", here, "--stages", "4", "--layers", "4", "--hidden", "8",
                "--heads", "2", "--seq-len", "8", "--vocab", "8", "--samples", "32", "--dtype", "float64"],
               check=True)


class OneHotMse(nn.Module):
    """A loss module: mean squared error of the logits against one-hot targets."""

    def forward(self, out, target):
        return ((out - nn.functional.one_hot(target, out.size(-1)).to(out.dtype)) ** 2).mean()


torch.manual_seed(2)
# A stage 1 of the wrong width: takes [.., 6], the stages carry [.., 8].
torch.jit.script(nn.Linear(6, 6).double()).save(os.path.join(here, "bad_width.pt"))
# A plain tensor file: neither a TorchScript module nor a data dictionary.
torch.save(torch.zeros(4, 8, dtype=torch.int64), os.path.join(here, "tensor.pt"))
torch.jit.script(OneHotMse()).save(os.path.join(here, "loss_mse.pt"))
