"""Plain-text tables for the terminal (no dependency, no colour)."""

from __future__ import annotations

__all__ = ["table"]


def table(rows: list[list[str]]) -> str:
    """``rows`` (the first is the header) as left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
