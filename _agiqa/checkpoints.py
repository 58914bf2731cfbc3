"""Whether a state dict fits a model, said in one line: the one mismatch report of every loader.

The student, MANIQA and MA-AGIQA loaders check a checkpoint against their model before calling
``load_state_dict`` (whose error spans many lines) and raise their own error with
:meth:`StateMismatch.summary`. Shapes only, so this module needs no torch: pass
``shapes(model.state_dict())`` and ``shapes(state)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = ["StateMismatch", "shapes", "state_mismatch"]

Shapes = Mapping[str, tuple[int, ...]]


def shapes(state: Mapping[str, object]) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of a state dict (anything whose values have a ``.shape``)."""
    return {name: tuple(value.shape) for name, value in state.items()}  # type: ignore[attr-defined]


@dataclass(frozen=True)
class StateMismatch:
    """The tensors a checkpoint lacks, has in excess, or has in another shape (sorted names)."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    wrong_shape: tuple[str, ...] = ()  # "name (stored shape) vs (model shape)"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def __len__(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.wrong_shape)

    def summary(self, limit: int = 4) -> str:
        """``"3 tensors differ: missing [a, b] (2); unexpected [c] (1)"``: at most ``limit`` names a kind."""
        parts = [f"{kind} [{', '.join(names[:limit])}{', ...' if len(names) > limit else ''}] ({len(names)})"
                 for kind, names in (("missing", self.missing), ("unexpected", self.unexpected),
                                     ("wrong shape", self.wrong_shape)) if names]
        return f"{len(self)} tensors differ: " + "; ".join(parts)


def state_mismatch(expected: Shapes, stored: Shapes, *,
                   optional: Callable[[str], bool] | Iterable[str] = ()) -> StateMismatch:
    """How ``stored`` (a checkpoint's shapes) differs from ``expected`` (the model's).

    ``optional`` names model tensors a checkpoint may leave out (derived buffers the model
    rebuilds itself): a set of names or a predicate.
    """
    may_lack = optional if callable(optional) else set(optional).__contains__
    return StateMismatch(
        missing=tuple(sorted(k for k in expected if k not in stored and not may_lack(k))),
        unexpected=tuple(sorted(k for k in stored if k not in expected)),
        wrong_shape=tuple(sorted(f"{k} {stored[k]} vs {expected[k]}" for k in expected
                                 if k in stored and tuple(stored[k]) != tuple(expected[k]))))
