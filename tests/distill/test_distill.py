"""The distiller: config, metrics, compression, losses, and a tiny end-to-end run with resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from distill.cli import app
from distill.compression import LinearCompression, load_compressions, save_compressions
from distill.config import ConfigError, LossConfig, load_config
from distill.losses import DistillationLoss, DistillTargets, pairwise_rank_loss
from distill.metrics import iqa_metrics
from student.model import StudentIQA, create_student
from teacher.cache_schema import TeacherOutput


def test_config_defaults_file_and_overrides(tmp_path: Path) -> None:
    cfg = load_config()
    assert cfg.is_demo and cfg.student.variant == "mnv3s"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\nstudent:\n  overrides: {input_size: [96, 96]}\n")
    cfg = load_config(path, ["train.lr=0.01", "data.kind=folder", "student.variant=tiny"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.data.kind) == (3, 0.01, "folder")
    assert cfg.student.overrides == {"input_size": [96, 96]}
    with pytest.raises(ConfigError, match="train.epoch"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_metrics_against_known_values() -> None:
    x = np.linspace(0, 1, 50)
    m = iqa_metrics(x, 3 / (1 + np.exp(-(x - 0.5) * 8)) + 1)  # monotone, non-linear
    assert m["srcc"] == pytest.approx(1.0) and m["krcc"] == pytest.approx(1.0)
    assert m["plcc"] > 0.999 and m["rmse"] < 1e-2  # the logistic fit undoes the non-linearity
    assert iqa_metrics(x, -x)["srcc"] == pytest.approx(-1.0)
    assert np.isnan(iqa_metrics(np.ones(5), x[:5])["srcc"])


def test_compression_fit_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    basis = torch.randn(4, 32)
    x = torch.randn(40, 4) @ basis + 3.0  # rank 4 + offset
    comp = LinearCompression.fit(x, k=4)
    codes = comp.encode(x)
    assert codes.shape == (40, 4)
    assert torch.allclose(comp.decode(codes), x, atol=1e-4)
    assert codes.var(dim=0).mean() == pytest.approx(1.0, rel=0.05)
    assert LinearCompression.fit(x, k=100).dim == 32  # clamped to min(N - 1, D)
    save_compressions(tmp_path, {"quality": comp})
    back = load_compressions(tmp_path)["quality"]
    # The stored basis is bitwise the fitted one; encoding may differ in the last bits because
    # the matmul kernel can pick another reduction order for a reloaded tensor (AVX-512 CPUs do).
    for name in ("mean", "components", "scale"):
        assert torch.equal(getattr(back, name), getattr(comp, name)), name
    torch.testing.assert_close(back.encode(x), codes, rtol=1e-5, atol=1e-5)


def test_losses_are_zero_at_the_teacher_and_rank_orders() -> None:
    model = create_student("tiny").eval()
    out = model(torch.randn(4, 3, 64, 64))
    teacher = TeacherOutput(score=out.score.detach(), semantic_vectors=out.semantic_vectors.detach(),
                            quality_features=out.quality_features.detach(), gate_weights=out.gate_logits.detach())
    targets = DistillTargets(teacher, mos=torch.full((4,), float("nan")))
    losses = DistillationLoss(LossConfig(), score_std=1.0)(out, targets)
    for name in ("score", "mos", "semantic", "quality", "gate"):
        assert float(losses[name].detach()) == pytest.approx(0.0, abs=1e-5), name
    t = torch.tensor([0.0, 1.0, 2.0])
    assert pairwise_rank_loss(t * 10, t) < pairwise_rank_loss(-t * 10, t)


def _tiny_overrides(out: Path) -> list[str]:
    return [f"out_dir={out}", "data.demo_images=40", "data.demo_unlabeled=20", "data.unlabeled_holdout=0.25",
            "student.variant=tiny",
            "train.epochs=3", "train.batch_size=8", "loss.semantic_components=8", "loss.quality_components=8",
            "data.val_fraction=0.2", "data.test_fraction=0.2", "teacher.train.epochs=1",
            "teacher.train.batch_size=8", "teacher.train.maniqa_epochs=1"]


def test_tiny_run_end_to_end_and_resume_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture, realistic_image_dir: Path) -> None:
    from distill import labels as labels_module
    from distill import run as run_module
    from distill import train as train_module
    from distill.run import run_distillation

    labelled: list[Path] = []  # every label cache the teacher writes
    real_build = labels_module.build_label_cache

    def counting_build(records, teacher, out, **kwargs):  # type: ignore[no-untyped-def]
        labelled.append(Path(out))
        return real_build(records, teacher, out, **kwargs)

    monkeypatch.setattr(labels_module, "build_label_cache", counting_build)
    monkeypatch.chdir(tmp_path)  # the model card shows paths relative to the current folder
    full = run_distillation(load_config(None, _tiny_overrides(tmp_path / "full")), progress=False)
    run_dir = Path(full.run_dir)
    for name in ("config.json", "splits.json", "data_index.json", "metrics.jsonl", "metrics.json",
                 "MODEL_CARD.md", "plots/losses.png", "plots/student_vs_teacher.png",
                 "plots/student_vs_mos.png", "plots/teacher_vs_mos.png", "teacher/train_metrics.json",
                 "student/best/model.safetensors", "student/best/compression.safetensors",
                 "student/last/config.json", "checkpoint/state.json"):
        assert (run_dir / name).is_file(), name
    tensors = json.loads((run_dir / "checkpoint/state.json").read_text())["tensors"]
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == sorted(["state.json", tensors])
    assert np.isfinite(full.test["vs_teacher"]["srcc"])
    assert np.isfinite(full.teacher_vs_mos["srcc"]) and np.isfinite(full.test["vs_mos"]["srcc"])
    assert full.images == {"train": 24, "val": 8, "test": 8, "unlabeled": 15, "unlabeled_holdout": 5}
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(json.dumps(full.metrics()))
    assert full.model_card == str(run_dir / "MODEL_CARD.md") and len(full.plots) == 5
    assert (run_dir / "plots/student_vs_teacher_unlabeled.png").is_file()
    index = json.loads((run_dir / "data_index.json").read_text())
    assert all(Path(p).is_file() for p in index["splits"]["test"]) and len(index["unlabeled"]) == 20
    # A seeded slice of the unlabeled pool is held out: never trained on, evaluated against the teacher.
    held = full.unlabeled_holdout
    assert held["n"] == 5 and held["images"] == "full/demo_unlabeled" and held["vs_teacher"]["n"] == 5
    holdout_ids = run_module.unlabeled_holdout(
        run_module._unlabeled_records(load_config(None, _tiny_overrides(run_dir)), run_dir)[0], 0.25, 20)
    assert len(holdout_ids) == 5 and all(i.startswith("unlabeled/") for i in holdout_ids)
    # The teacher was trained on train + val only: it never saw a test image.
    test_ids = set(json.loads((run_dir / "splits.json").read_text())["splits"]["test"])
    teacher_splits = json.loads((run_dir / "teacher" / "splits.json").read_text())["splits"]
    assert test_ids and not test_ids & set(teacher_splits["train"])
    card = (run_dir / "MODEL_CARD.md").read_text()
    assert "Higher scores mean better quality" in card and str(tmp_path) not in card
    assert "> " + run_module.DEMO_NOTICE in card  # the demo says it is a demo, in its card ...
    assert run_module.DEMO_NOTICE in capsys.readouterr().out  # ... and when it starts
    # The untrained teacher labels train + val (to train on), the trained one all images and the
    # unlabeled views: three caches, each written once.
    assert [p.parent.name for p in labelled] == ["labels"] * 3 and len(set(labelled)) == 3
    assert "agiqa-export executorch full --out model.pte" in card
    assert "| teacher vs MOS | student vs MOS | student vs teacher |" in card and "{'train'" not in card
    assert "held-out unlabeled images, never trained on" in card and "5 images of `full/demo_unlabeled`" in card

    # agiqa-distill evaluate: the run's teacher labels a folder of other images, its student is scored.
    result = CliRunner().invoke(app, ["evaluate", str(run_dir), str(realistic_image_dir), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads(next((run_dir / "evaluations").glob("images-*.json")).read_text())
    assert report["images"] == str(realistic_image_dir.resolve()) and report["n"] == 16
    assert f"SRCC {report['vs_teacher']['srcc']:.3f}" in result.output and np.isfinite(report["vs_teacher"]["srcc"])
    assert Path(report["plot"]).is_file() and labelled[-1].name.split("-")[1] == "evaluate"
    n_labelled = len(labelled)
    again = CliRunner().invoke(app, ["evaluate", str(run_dir), str(realistic_image_dir), "--no-progress"])
    assert again.exit_code == 0 and len(labelled) == n_labelled  # cached: not labelled twice
    assert json.loads(Path(report["report"]).read_text()) == report
    bad = CliRunner().invoke(app, ["evaluate", str(run_dir), str(tmp_path / "nowhere"), "--no-progress"])
    assert bad.exit_code != 0 and "nowhere: not a folder of images" in bad.output and "Traceback" not in bad.output

    # Interrupt the same run after step 4 (mid epoch 2), then resume it.
    real_get_lr = train_module.get_lr

    def interrupting_get_lr(step: int, total: int, cfg):  # type: ignore[no-untyped-def]
        if step == 4:
            raise KeyboardInterrupt("interrupted by the test at step 4")
        return real_get_lr(step, total, cfg)

    # A re-run finds the trained teacher and reuses it (no records needed: nothing is trained).
    from distill.demo import train_demo_teacher
    from student.layout import RunLayout
    from teacher.distributed import DistContext

    assert train_demo_teacher(load_config(None, _tiny_overrides(run_dir)), RunLayout(run_dir), [],
                              DistContext(), False) == run_dir / "teacher"

    # The resumed run takes the first run's teacher, images and labels through teacher.path,
    # data.root, data.unlabeled and teacher.cache (as a real run would): nothing is labelled again.
    cfg = load_config(None, _tiny_overrides(tmp_path / "resumed")
                      + ["train.checkpoint_every=2", f"teacher.path={run_dir / 'teacher'}",
                         f"teacher.cache={run_dir / 'labels'}", f"data.root={run_dir / 'demo_images'}",
                         f"data.unlabeled={run_dir / 'demo_unlabeled'}", "data.unlabeled_kind=folder"])
    monkeypatch.setattr(train_module, "get_lr", interrupting_get_lr)
    with pytest.raises(KeyboardInterrupt, match="interrupted by the test at step 4"):
        run_distillation(cfg, progress=False)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    monkeypatch.setattr(train_module, "get_lr", real_get_lr)
    resumed = run_distillation(cfg, resume=True, progress=False)
    assert resumed.test == full.test
    a = StudentIQA.from_pretrained(run_dir / "student" / "last").state_dict()
    b = StudentIQA.from_pretrained(tmp_path / "resumed" / "student" / "last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
             if "loss/total" in line]
    assert steps == sorted(set(steps))  # no step logged twice after the resume
    assert len(labelled) == 4  # the resumed run labelled nothing (the 4th: the evaluated folder)


def test_cli_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--set", "train.epochz=1"])
    assert result.exit_code == 2
    assert "unknown config key" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["run", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "config.json" in result.output
    help_text = runner.invoke(app, ["run", "--help"]).output
    assert "--config" in help_text and "--resume" in help_text


def test_demo_mos_falls_with_strength_and_scramble_is_as_bad_as_heavy_blur() -> None:
    from distill.demo import DEGRADATIONS, MOS_RANGE, demo_mos

    for kind in DEGRADATIONS:
        values = [demo_mos(kind, s) for s in np.linspace(0, 1, 11)]
        assert all(MOS_RANGE[0] <= v <= MOS_RANGE[1] for v in values), kind
        assert all(a >= b for a, b in zip(values, values[1:])), kind  # never rises with strength
    assert demo_mos("sharp", 0.7) == MOS_RANGE[1]
    assert demo_mos("blur", 1.0) == demo_mos("scramble", 1.0) == MOS_RANGE[0]
    assert demo_mos("scramble", 0.0) < demo_mos("blur", 0.5)  # broken semantics are bad at once
    with pytest.raises(ValueError, match="unknown degradation"):
        demo_mos("rain", 0.5)


def test_demo_images_carry_their_mos_as_a_csv_dataset(tmp_path: Path) -> None:
    from distill.data import DatasetSpec, load_records
    from distill.demo import MOS_FILE, demo_mos, make_demo_images

    folder = make_demo_images(tmp_path / "demo", count=10, seed=3, size=(64, 80))
    entries = json.loads((folder / "demo.json").read_text())["images"]
    records = load_records(DatasetSpec(kind="csv", root=str(folder), annotations=str(folder / MOS_FILE)))
    by_name = {r.image_id: r.mos for r in records}
    assert len(records) == 10
    for e in entries:
        assert by_name[e["file"]] == pytest.approx(demo_mos(e["degradation"], e["strength"]), abs=1e-3)
    stamp = (folder / MOS_FILE).stat().st_mtime_ns
    make_demo_images(folder, count=10, seed=3, size=(64, 80))  # same key: left as it is
    assert (folder / MOS_FILE).stat().st_mtime_ns == stamp


def test_demo_images_at_several_sizes(tmp_path: Path) -> None:
    """``sizes``: each image at one of them, drawn per image (the unlabeled pool's photo sizes);
    a set of one size is the set ``size`` makes, and the key tells the two apart."""
    from distill.demo import make_demo_images

    sizes = ((32, 48), (48, 32), (40, 40))
    folder = make_demo_images(tmp_path / "sizes", count=12, seed=5, sizes=sizes)
    drawn = [Image.open(p).size[::-1] for p in sorted(folder.glob("*.png"))]
    assert len(drawn) == 12 and set(drawn) == set(sizes)
    single = make_demo_images(tmp_path / "single", count=4, seed=5, size=(32, 48))
    assert {Image.open(p).size[::-1] for p in single.glob("*.png")} == {(32, 48)}
    stamp = (folder / "mos.csv").stat().st_mtime_ns
    make_demo_images(folder, count=12, seed=5, sizes=sizes[:2])  # another key: made anew
    assert (folder / "mos.csv").stat().st_mtime_ns != stamp


def test_unlabeled_data_is_read_with_prefixed_ids_and_no_mos(tmp_path: Path) -> None:
    from distill.demo import make_demo_images
    from distill.run import UNLABELED_PREFIX, _unlabeled_records

    folder = make_demo_images(tmp_path / "extra", count=4, seed=1, size=(32, 40))
    cfg = load_config(None, [f"out_dir={tmp_path / 'run'}", "data.kind=folder", f"data.unlabeled={folder}"])
    records, root = _unlabeled_records(cfg, tmp_path / "run")
    assert root == folder and len(records) == 4
    assert all(r.image_id.startswith(UNLABELED_PREFIX) and r.mos is None and r.path.is_file() for r in records)
    # A CSV with MOS is read as a dataset, but its MOS is not used: the teacher labels these images.
    cfg = load_config(None, [f"out_dir={tmp_path / 'run'}", "data.kind=folder",
                             f"data.unlabeled={folder / 'mos.csv'}"])
    assert [r.mos for r in _unlabeled_records(cfg, tmp_path / "run")[0]] == [None] * 4
    assert _unlabeled_records(load_config(None, ["data.kind=folder"]), tmp_path) == ([], None)


def test_report_direction_sizes_and_zero_losses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distill import report

    metrics = {"srcc": 0.9, "plcc": 0.91, "krcc": 0.8, "rmse": 0.1, "n": 20}
    result = {"test": {"vs_teacher": metrics, "vs_mos": metrics}, "teacher_vs_mos": metrics,
              "images": {"train": 300, "val": 40, "test": 20, "unlabeled": 500}, "skipped_images": 0,
              "student": {"backbone": "b", "params": 1e6}, "teacher_fingerprint": "f" * 64,
              "steps": 10, "best_step": 5, "seconds": 1.0, "lower_better": True}
    monkeypatch.chdir(tmp_path)
    card = report.write_model_card(tmp_path / "runs" / "x", load_config(), result, None).read_text()
    assert "Lower scores mean better quality" in card and "Higher" not in card
    assert "300 train, 40 val, 20 test" in card and "500 unlabeled" in card
    assert "agiqa-export executorch runs/x --out model.pte" in card and str(tmp_path) not in card

    lines = [{"step": s, "loss/total": 1.0 / s, "loss/score": 0.5 / s, "loss/mos": 0.0} for s in (1, 2, 3)]
    lines += [{"step": 2, "val/srcc": 0.5, "val/plcc": 0.4}, {"step": 3, "val/srcc": 0.7, "val/plcc": 0.6}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    figures = []
    monkeypatch.setattr(report, "_save_figure", lambda fig, path: figures.append((path.name, fig)))
    unused = torch.zeros(6, 1)
    targets = DistillTargets(TeacherOutput(torch.linspace(0, 1, 6), unused, unused, unused), torch.linspace(1, 5, 6))
    report.write_plots(tmp_path, tmp_path / "m.jsonl", np.linspace(0, 1, 6), targets, best_step=3)
    names = [n for n, _ in figures]
    assert names == ["losses.png", "student_vs_teacher.png", "student_vs_mos.png", "teacher_vs_mos.png"]
    loss_ax, val_ax = figures[0][1].axes
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["score", "total"]  # no "mos"
    assert any("best checkpoint (step 3" in t.get_text() for t in val_ax.get_legend().get_texts())
    assert val_ax.get_ylim()[0] < 0.4  # the lowest point is inside the panel
    assert "SRCC" in figures[2][1].axes[0].get_title() and "PLCC" in figures[2][1].axes[0].get_title()


def test_image_set_through_holds_the_mapped_images(tmp_path: Path) -> None:
    """ImageSet.through (the training loop's stem computed once per image held in RAM): items are
    fn of the preloaded images, indices kept; a set decoded on access is refused."""
    from distill.train import ImageSet

    spec = create_student("tiny").config.preprocess
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(paths[-1])
    images = ImageSet(paths, spec, preload=True)
    mapped = images.through(lambda x: torch.cat([x, x.mean(1, keepdim=True)], 1), batch_size=2)
    assert mapped.preloaded and len(mapped) == 5
    for i in range(5):
        index, item = mapped[i]
        assert index == i and item.shape == (4, *images[i][1].shape[1:])
        assert torch.equal(item[:3], images[i][1]) and torch.equal(item[3], images[i][1].mean(0))
    with pytest.raises(ValueError, match="preloaded"):
        ImageSet(paths, spec, preload=False).through(lambda x: x)
