"""Accelerator and dtype selection, seeding, and memory figures."""

from __future__ import annotations

import os
import random
import resource
import sys

import numpy as np
import torch

from recsys_cli import console
from recsys_cli.errors import DeviceError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(accelerator: str = "auto", *, log: bool = True) -> torch.device:
    """``auto`` → cuda, then mps, then cpu. An absent accelerator is an error, never a silent fallback."""
    if accelerator == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif mps_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
        if log:
            console.info(f"device: auto selected {describe_device(device)}")
        return device
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "device.accelerator is 'cuda' but no CUDA device is available to this torch "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'})",
            hint="use --set device.accelerator=cpu (or auto), or install a CUDA build of torch",
        )
    if accelerator == "mps" and not mps_available():
        raise DeviceError(
            "device.accelerator is 'mps' but Apple MPS is not available here",
            hint="use --set device.accelerator=cpu (or auto)",
        )
    if accelerator not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown accelerator {accelerator!r}", hint="use one of auto, cpu, cuda, mps")
    device = torch.device(accelerator)
    if log:
        console.info(f"device: {describe_device(device)}")
    return device


def resolve_dtype(name: str, device: torch.device | None = None) -> torch.dtype:
    if name not in DTYPES:
        raise DeviceError(f"unknown dtype {name!r}", hint=f"use one of {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    if device is not None and device.type == "mps" and dtype == torch.float64:
        raise DeviceError("float64 is not supported on Apple MPS", hint="use --set device.dtype=float32")
    return dtype


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy's legacy global RNG and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_tf32(enabled: bool) -> None:
    """TF32 matmuls on CUDA (Ampere and newer): faster float32 products with a 10-bit mantissa."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def configure_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def _kib_field(path: str, field: str) -> int | None:
    """A ``Name:   123 kB`` line of a Linux /proc file, in bytes (None elsewhere or if absent)."""
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far.

    Linux's ``VmHWM`` is preferred: ``ru_maxrss`` survives fork+exec, so a fresh worker process would
    report its parent's peak.
    """
    hwm = _kib_field("/proc/self/status", "VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (Linux only)."""
    return _kib_field("/proc/self/status", "VmRSS")


def available_memory_bytes(device: torch.device) -> int:
    """Free memory the device can give us now (RAM for the CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    available = _kib_field("/proc/meminfo", "MemAvailable")
    if available is not None:
        return available
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
