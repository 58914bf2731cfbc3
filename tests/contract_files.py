"""Test helpers that edit a written model.json as a person (or an attacker) would.

Version 2 keeps the contract's fields as text inside the file, so an edit rewrites that text;
``rehash`` also recomputes the file's own digest (which the program's embedded one then
catches). Version 1 files are edited at top level, rehashed with Python's canonical JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from edge_runtime.contract import contract_digest_v1, sha256_bytes


def edit_fields(data: dict[str, Any], edit: Callable[[dict[str, Any]], None], *,
                rehash: bool = False) -> dict[str, Any]:
    """``data`` (a parsed model.json, either version) with ``edit(fields)`` applied."""
    data = json.loads(json.dumps(data))  # a deep copy
    if data.get("format_version") == 1:
        edit(data)
        if rehash:
            data["contract_sha256"] = contract_digest_v1(data)
        return data
    fields = json.loads(data["contract"])
    edit(fields)
    data["contract"] = json.dumps(fields, indent=2, sort_keys=True)
    if rehash:
        data["contract_sha256"] = sha256_bytes(data["contract"].encode("utf-8"))
    return data


def flip_one_byte_of_text(data: dict[str, Any]) -> dict[str, Any]:
    """A version-2 model.json whose contract text differs in one byte: the first digit of the
    preprocessing mean (still valid JSON, still a plausible contract)."""
    text = data["contract"]
    at = text.index('"mean"')
    at += next(i for i, c in enumerate(text[at:]) if c.isdigit())
    changed = text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:]
    assert len(changed.encode()) == len(text.encode()) and changed != text
    return {**data, "contract": changed}
