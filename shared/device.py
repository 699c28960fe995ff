"""Where torch computes: the `device` setting (`auto`, `cpu`, `cuda`, `cuda:N`) and its one resolution.

`auto` is the first CUDA GPU when torch sees one, else the CPU. Training and inference functions
take the resolved `torch.device`; every random draw stays on a seeded CPU `torch.Generator`, so a
seeded run on the CPU repeats exactly, and a run on a GPU draws the same batches, noise and
augmentations (its floating-point results differ in the last bits, as GPU kernels do). DP-SGD's
sampling and noise are the exception: they are secret (`shared/dp.py`) unless `DPConfig.repeatable`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

#: The spellings of the setting; `cuda:N` names the N-th GPU torch sees.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]{1,3})?")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


class DeviceError(ValueError):
    """A device setting that is misspelt or names hardware this machine lacks; one line says which."""


def check_device(name: str) -> str:
    """`name` if it is spelt as one of `DEVICE_CHOICES`; `DeviceError` otherwise. Checks no hardware."""
    if not isinstance(name, str) or DEVICE_PATTERN.fullmatch(name) is None:
        raise DeviceError(f"device must be {DEVICE_CHOICES}, got {name!r}")
    return name


def resolve_device(name: str) -> torch.device:
    """The `torch.device` that `name` stands for on this machine.

    `auto`: `cuda:0` when `torch.cuda.is_available()`, else `cpu`. Raises `DeviceError` for a
    misspelt name, for `cuda` where torch sees no CUDA GPU (a CPU-only build of torch, or no
    driver), and for `cuda:N` beyond the GPUs torch sees.
    """
    check_device(name)
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda", 0) if available else torch.device("cpu")
    if not available:
        build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no GPU or driver found"
        raise DeviceError(f"device {name} asked for, but torch {torch.__version__} sees no CUDA GPU here ({build}); "
                          "use device auto or cpu")
    index = int(name.split(":", 1)[1]) if ":" in name else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {name} asked for, but torch sees {count} CUDA GPU(s) here (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H200)`: what the logs and metrics name."""
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


Device = torch.device | str | None


@contextlib.contextmanager
def placed(module: torch.nn.Module, device: Device) -> Iterator[torch.device]:
    """`module` on `device` for the block (None: where it is), and back where it was afterwards, also on error.

    Models live on the CPU between steps (saving, encoding and hashing read their weights there);
    a step that computes on a GPU moves its model there and back, which for fedkr's models (at
    most a few million parameters) costs milliseconds.
    """
    home = next(module.parameters()).device
    target = home if device is None else torch.device(device)
    if target == home:
        yield home
        return
    module.to(target)
    try:
        yield target
    finally:
        module.to(home)
