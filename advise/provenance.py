"""Hashes that tie records to what they describe."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def json_sha256(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of `value`: sorted keys, no spaces, ASCII. Equal
    for a value and the same value read back from any JSON file layout."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
