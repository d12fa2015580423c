"""Upstream ids: validated once, so an id can never change a request's path."""

from __future__ import annotations

import re
from urllib.parse import quote

__all__ = ["ID_PATTERN", "path_segment", "validate_id"]

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
"""Letters, digits, ``_`` and ``-``; what Parallel (``tgrp_``, ``trun_``) and
Trigger.dev (``run_``) ids are made of. No ``/``, ``.``, ``%``, ``?`` or ``#``."""


def validate_id(value: str) -> str:
    """Return ``value`` if it is a safe upstream id, else raise ``ValueError``."""
    if not ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"invalid id {value!r}: use 1-128 letters, digits, '_' or '-' "
            "(ids may not contain '/', '.', '%', '?', '#' or spaces)"
        )
    return value


def path_segment(value: str) -> str:
    """Validate ``value`` and percent-encode it as one URL path segment."""
    return quote(validate_id(value), safe="")
