"""Finds PyTorch 2.x for the Python tests, or says loudly that they skip; and
stand-in stages for building PyTorch schedules without processes.

A test imports this first: when the running interpreter has no torch 2.x, it
re-runs the test with the project's venv (build/venv/bin/python, installed by
scripts/torch_venv.sh) if that has it, else prints SKIPPED and exits with
SKIP_CODE, which CTest reports as skipped (never as a failure)."""

import os
import sys

SKIP_CODE = 77
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))


def has_torch2() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return int(torch.__version__.split(".")[0]) >= 2


def require_torch2(build_dir: str) -> None:
    if has_torch2():
        return
    venv_python = os.path.join(build_dir, "venv", "bin", "python")
    # Once only: the venv's python may be a link to this very interpreter.
    if os.access(venv_python, os.X_OK) and not os.environ.get("DUALPIPE_IN_TORCH_VENV"):
        os.environ["DUALPIPE_IN_TORCH_VENV"] = "1"
        os.execv(venv_python, [venv_python] + sys.argv)
    print(
        f"SKIPPED: PyTorch 2.x is not installed ({venv_python} missing or without torch); "
        "scripts/torch_venv.sh installs it (scripts/test.sh runs it when 10 GiB are free)",
        flush=True,
    )
    sys.exit(SKIP_CODE)


def stand_in(ranks: int, stages: int, index: int):
    """What a PyTorch schedule's constructor and CSV loader read from a
    PipelineStage (here of rank 0), without a process group."""
    import types

    import torch

    return types.SimpleNamespace(num_stages=stages, group_size=ranks, group_rank=0, stage_index=index,
                                 submod=torch.nn.Identity(), is_first=index == 0, is_last=index == stages - 1)
