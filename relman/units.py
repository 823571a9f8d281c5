"""Human-readable figures shared by the CLI and the GUI (no Qt, no heavy imports)."""

from __future__ import annotations


def human_size(n: int | float | None) -> str:
    """Bytes as B / KB / MB / GB (binary multiples), '' for unknown."""
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
