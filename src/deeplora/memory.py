"""Memory checks before large allocations: refuse with one clear line instead of an allocator
traceback (or the kernel's OOM killer) minutes later."""

from __future__ import annotations

from collections.abc import Callable

import psutil
import torch


class TooLargeError(ValueError):
    """The requested problem needs more memory than the device has available."""


def available_bytes(device: torch.device | str | None = None) -> int:
    """Free memory of ``device``: CUDA's free memory, else the host's available memory."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(psutil.virtual_memory().available)


def gib(nbytes: float) -> str:
    """``nbytes`` as a short human-readable size."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def check_fits(needed: float, what: str, advice: str = "",
               device: torch.device | str | None = None) -> None:
    """Raise :class:`TooLargeError` if ``needed`` bytes exceed what ``device`` has available.

    The message reads ``{what} needs about X, Y available[; advice]``.
    """
    free = available_bytes(device)
    if needed > free:
        raise TooLargeError(f"{what} needs about {gib(needed)}, {gib(free)} available"
                            + (f"; {advice}" if advice else ""))


def check_square_fits(needs: Callable[[int, int], float], shape: tuple[int, int], what: str,
                      minimum: int = 1, size_name: str = "size",
                      device: torch.device | str | None = None) -> None:
    """Raise :class:`TooLargeError` if ``needs(m, n)`` bytes exceed what ``device`` has
    available, naming the largest square ``s × s`` (``minimum <= s <= max(m, n)``, found by
    bisection; ``needs`` must grow with s) that fits.

    The message reads ``{what} needs about X, Y available; the largest square {size_name} that
    fits is s`` (or ``nothing fits``).
    """
    free = available_bytes(device)
    if needs(*shape) <= free:
        return
    low, high = minimum, max(shape)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if needs(mid, mid) <= free else (low, mid - 1)
    fits = (f"the largest square {size_name} that fits is {low}" if needs(low, low) <= free
            else "nothing fits")
    raise TooLargeError(f"{what} needs about {gib(needs(*shape))}, {gib(free)} available; {fits}")
