"""Ops that compute in float32 on purpose under autocast and for float16 / bfloat16 inputs.

Nearest-neighbour choices (knn, Chamfer) and the selective scan's recurrence are not safe in 16-bit
floats: a bf16 matmul rounds squared distances to 8 bits of mantissa, so it picks wrong neighbours
and invalidates knn's rounding bound; the scan's state decays over L steps. autocast would make their
matmuls bf16 behind the caller's back, so these ops turn it off inside and upcast 16-bit inputs.
"""
import contextlib

import torch

_LOW = (torch.float16, torch.bfloat16)


def is_low_precision(t: torch.Tensor) -> bool:
    return t.dtype in _LOW


def upcast(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is float16 / bfloat16, else unchanged."""
    return t.float() if t.dtype in _LOW else t


def no_autocast(device: torch.device):
    """A context in which autocast is off for ``device``'s type (a no-op where autocast does not exist)."""
    kind = device.type if isinstance(device, torch.device) else str(device)
    if torch.amp.is_autocast_available(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()
