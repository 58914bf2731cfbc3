"""``--version`` for the three commands: the installed agiqa-edge and the toolchain beside it."""

from __future__ import annotations

import importlib.metadata

__all__ = ["installed_version", "version_callback", "version_text"]

_TOOLCHAIN = ("executorch", "torch", "torchao", "timm", "transformers")


def installed_version(name: str) -> str | None:
    """The installed distribution's version, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_text() -> str:
    """``agiqa-edge 0.1.0 (executorch 1.5.1, torch 2.14.1, ...)``; absent packages are left out."""
    ours = installed_version("agiqa-edge") or "(not installed: source tree)"
    found = [f"{name} {v}" for name in _TOOLCHAIN if (v := installed_version(name))]
    return f"agiqa-edge {ours}" + (f" ({', '.join(found)})" if found else "")


def version_callback(value: bool) -> None:
    """A typer ``--version`` option callback: print and exit 0 (``SystemExit`` ends click's
    processing as its own ``Exit`` would, and keeps this module standard-library only)."""
    if value:
        print(version_text(), flush=True)
        raise SystemExit(0)
