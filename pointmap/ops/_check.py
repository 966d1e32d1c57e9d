"""Input validation shared by the ops: one-line ValueErrors naming the argument at fault."""
import torch

from ..errors import UserError


def check_points(name: str, x, dims: int = 3, check_finite: bool = True) -> None:
    """``x`` must be a floating tensor of shape (B, N, dims) with finite values."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 3 or x.shape[-1] != dims:
        raise ValueError(f"{name} must have shape (B, N, {dims}), got {tuple(x.shape)}")
    # the finite check reads a value on the host: skipped inside torch.compile, where it would break the graph
    if check_finite and x.numel() and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise UserError(f"{name} has non-finite values (first at index {tuple(bad)})")


def check_count(name: str, value, upper: int, upper_name: str, lower: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < lower:
        raise ValueError(f"{name} must be >= {lower}, got {value}")
    if value > upper:
        raise ValueError(f"{name}={value} is larger than {upper_name}={upper}")


def check_same_batch(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{a_name} and {b_name} have different batch sizes: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"{a_name} is on {a.device} but {b_name} is on {b.device}")
    if a.dtype != b.dtype:
        raise ValueError(f"{a_name} is {a.dtype} but {b_name} is {b.dtype}")
