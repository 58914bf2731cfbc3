"""The one state-dict mismatch report (_agiqa/checkpoints.py), and each loader that uses it."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from _agiqa.checkpoints import StateMismatch, state_mismatch


def test_mismatch_names_each_kind_sorted_and_counts_them() -> None:
    model = {"b": (2, 3), "a": (4,), "c": (1,), "buf": (5,)}
    stored = {"a": (4,), "b": (3, 2), "z": (1,), "y": (2,)}
    problems = state_mismatch(model, stored, optional={"buf"})
    assert problems == StateMismatch(missing=("c",), unexpected=("y", "z"), wrong_shape=("b (3, 2) vs (2, 3)",))
    assert len(problems) == 4 and bool(problems)
    assert problems.summary() == ("4 tensors differ: missing [c] (1); unexpected [y, z] (2); "
                                  "wrong shape [b (3, 2) vs (2, 3)] (1)")
    assert problems.summary(limit=1).count(", ...") == 1  # unexpected: 2 names, 1 shown
    assert not state_mismatch(model, {"a": (4,), "b": (2, 3), "c": (1,)}, optional=lambda k: k == "buf")
    assert not state_mismatch(model, {"a": (4,), "b": (2, 3), "c": (1,)}, optional={"buf"})
    assert state_mismatch(model, {"a": (4,), "b": (2, 3), "c": (1,)}).missing == ("buf",)


def test_every_loader_reports_through_it(tmp_path) -> None:
    """The student's, MANIQA's and MA-AGIQA's loaders give the same one-line report."""
    from student.model import StudentIQA, StudentLoadError, create_student
    from teacher.maniqa import create_maniqa, load_maniqa_weights

    torch.manual_seed(0)
    folder = create_student("tiny").save_pretrained(tmp_path / "student")
    weights = folder / "model.safetensors"
    with safe_open(str(weights), "pt") as stored:  # keep the metadata (the training config) as saved
        state, metadata = {k: stored.get_tensor(k) for k in stored.keys()}, stored.metadata()
    first = sorted(state)[0]
    state.pop(first)
    save_file(state, str(weights), metadata=metadata)
    with pytest.raises(StudentLoadError, match=rf"1 tensors differ: missing \[{first}\] \(1\)") as info:
        StudentIQA.from_pretrained(folder)
    assert "\n" not in str(info.value)

    maniqa = create_maniqa("tiny")
    bad = {k: v.contiguous() for k, v in maniqa.state_dict().items()}
    bad["extra"] = torch.zeros(1)
    save_file(bad, str(tmp_path / "maniqa.safetensors"))
    with pytest.raises(ValueError, match=r"1 tensors differ: unexpected \[extra\] \(1\)"):
        load_maniqa_weights(create_maniqa("tiny"), tmp_path / "maniqa.safetensors")
