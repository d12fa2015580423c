"""The exit codes every command shares."""

from __future__ import annotations

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK"]

EXIT_OK = 0
"""Done as asked."""
EXIT_FAILED = 1
"""Ran, and something it checked failed (a watch errored, a notifier refused)."""
EXIT_CONFIG = 2
"""Bad configuration or usage: nothing was done."""
