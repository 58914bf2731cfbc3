"""Native mPLUG-Owl2 (teacher/mplug_owl2.py) against the ORIGINAL code.

The fixture ``tests/fixtures/mplug_owl2_tiny/`` is a tiny random mPLUG-Owl2 written by the
original X-PLUG code under transformers 4.32, with the real checkpoint's key names (its
``save_pretrained`` layout; the conversion-script layout of the released 7B is rebuilt from it in
``test_conversion_script_layout_loads_without_position_tables``), with what that code computed
from it (hidden states, pooled vectors, token ids, pixel values); regenerate it with
``tests/fixtures/make_mplug_owl2_reference.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from teacher.mplug_owl2 import (
    IMAGE_TOKEN_INDEX,
    LlamaSentencePieceTokenizer,
    MplugOwl2Config,
    load_mplug_owl2,
    prompt_text,
)
from teacher.semantic import DEFAULT_PROMPTS, SemanticConfig, SemanticEncoder, expand_to_square, pool_hidden
from tests import REPO

FIXTURE = REPO / "tests" / "fixtures" / "mplug_owl2_tiny"
ATOL = 1e-5  # fp32, original vs port


@pytest.fixture(scope="module")
def reference() -> dict:
    return {"json": json.loads((FIXTURE / "reference.json").read_text()),
            "tensors": load_file(str(FIXTURE / "reference.safetensors"))}


@pytest.fixture(scope="module")
def model():
    loaded, ignored = load_mplug_owl2(FIXTURE)
    # The fixture was saved by the original model's save_pretrained: it holds the position tables
    # (used, not ignored) and no rotary inv_freq.
    assert ignored == []
    return loaded


def test_fixture_is_small_and_in_the_real_layout() -> None:
    names = {p.name for p in FIXTURE.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json",
            "preprocessor_config.json"} <= names
    assert sum(p.stat().st_size for p in FIXTURE.iterdir()) < 2_000_000
    raw = json.loads((FIXTURE / "config.json").read_text())
    assert raw["model_type"] == "mplug_owl2" and "visual_abstractor" in raw["visual_config"]


def test_strict_key_load(model) -> None:
    checkpoint = load_file(str(FIXTURE / "model.safetensors"))
    tables = {k for k in checkpoint if k.endswith("_pos_embed")}
    assert set(model.state_dict()) == set(checkpoint) - tables
    assert len(tables) == 2 * 2
    buffers = dict(model.named_buffers())  # the stored tables, used as the original uses them
    for key in tables:
        assert buffers[key].dtype == torch.float32 and torch.equal(buffers[key], checkpoint[key]), key
    assert any(".multiway.1." in k for k in checkpoint) and "lm_head.weight" in checkpoint
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint[name]), name


def test_hidden_states_and_vectors_match_original(model, reference) -> None:
    tensors, ids = reference["tensors"], reference["json"]["token_ids"]["legacy"]
    with torch.inference_mode():
        for index, prompt_ids in enumerate(ids):  # the official protocol: one prompt, one image
            hidden, mask = model(tensors["pixel_values"], [prompt_ids])
            assert bool(mask.all())
            torch.testing.assert_close(hidden[0], tensors[f"hidden_{index}"], atol=ATOL, rtol=0)
            torch.testing.assert_close(hidden.mean(1)[0], tensors[f"vector_{index}"], atol=ATOL, rtol=0)
        # Batched: vision once, both prompts (different lengths, right-padded) in one forward.
        hidden, mask = model(tensors["pixel_values"], ids)
    for index in range(len(ids)):
        real = int(mask[index].sum())
        assert real == tensors[f"hidden_{index}"].shape[0]
        torch.testing.assert_close(hidden[index, :real], tensors[f"hidden_{index}"], atol=ATOL, rtol=0)


def test_fp16_vectors_match_original_fp16(reference) -> None:
    """The official vectors are fp16. Ours in fp16 (batched, fp32 pooling) stay within 1.5e-3 of the
    original's fp16 vectors (values ~1); the original's own fp16-vs-fp32 gap is 1.7e-3 to 2.4e-3."""
    tensors, ids = reference["tensors"], reference["json"]["token_ids"]["legacy"]
    half, _ = load_mplug_owl2(FIXTURE, dtype=torch.float16)
    with torch.inference_mode():
        hidden, mask = half(tensors["pixel_values"], ids)
    assert hidden.dtype == torch.float16
    vectors = pool_hidden(hidden, mask, "mean")
    for index in range(len(ids)):
        torch.testing.assert_close(vectors[index], tensors[f"vector_fp16_{index}"].float(), atol=1.5e-3, rtol=0)


def test_multiway_branches_matter(model, reference) -> None:
    """Visual tokens must take branch 1: treating every token as text changes the output."""
    tensors, ids = reference["tensors"], reference["json"]["token_ids"]["legacy"][:1]
    with torch.inference_mode():
        embeds, _, is_visual = model.splice(model.encode_images(tensors["pixel_values"]), ids)
        assert int(is_visual.sum()) == model.config.abstractor.num_learnable_queries + 1
        right = model.language_forward(embeds, is_visual)
        wrong = model.language_forward(embeds, torch.zeros_like(is_visual))
    torch.testing.assert_close(right[0], tensors["hidden_0"], atol=ATOL, rtol=0)
    assert (wrong - right).abs().max() > 1e-2


def test_tokenizer_ids_equal_transformers_4_32(reference) -> None:
    ref = reference["json"]
    assert tuple(ref["prompts"]) == DEFAULT_PROMPTS
    assert [prompt_text(q) for q in DEFAULT_PROMPTS] == ref["prompt_texts"]
    tokenizer = LlamaSentencePieceTokenizer.from_pretrained(FIXTURE)  # tokenizer_config.json: legacy
    assert [tokenizer.image_prompt_ids(p) for p in ref["prompt_texts"]] == ref["token_ids"]["legacy"]
    non_legacy = LlamaSentencePieceTokenizer(FIXTURE / "tokenizer.model", legacy=False)
    assert [non_legacy.image_prompt_ids(p) for p in ref["prompt_texts"]] == ref["token_ids"]["non_legacy"]
    for ids in ref["token_ids"]["legacy"]:
        assert ids[0] == tokenizer.bos_token_id and ids.count(IMAGE_TOKEN_INDEX) == 1
    with pytest.raises(ValueError, match="special tokens"):
        tokenizer.encode("USER: </s>")


def test_non_legacy_tokenizer_dependency_is_declared(reference) -> None:
    """Llama-2's tokenizer_config.json says legacy false: that path needs protobuf, so the teacher's
    install (the ``train`` extra) declares it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    train = project["optional-dependencies"]["train"]
    assert any(req.split(">")[0].split("=")[0].strip() == "protobuf" for req in train), train
    folder_ids = reference["json"]["token_ids"]
    # What the 4.32 comparison can and cannot show (see the tokenizer's docstring).
    assert folder_ids["legacy"] == folder_ids["non_legacy"]
    tokenizer = LlamaSentencePieceTokenizer(FIXTURE / "tokenizer.model", legacy=False)
    assert tokenizer.processor.serialized_model_proto() != LlamaSentencePieceTokenizer(
        FIXTURE / "tokenizer.model").processor.serialized_model_proto()  # the dummy prefix was really dropped


def test_image_preprocessing_matches_original(reference) -> None:
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil.from_pretrained(FIXTURE)
    image = Image.fromarray(reference["tensors"]["image"].numpy())
    pixels = processor.preprocess([expand_to_square(image, processor.image_mean)], return_tensors="pt")
    torch.testing.assert_close(pixels["pixel_values"], reference["tensors"]["pixel_values"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("side, crop", [(28, 28), (448, 448), (448, 336)])
def test_clip_pixel_values_equal_the_processor(reference, side: int, crop: int) -> None:
    """The 448 view made directly (one Pillow resize, then rescale/normalize at 448) equals the
    processor's output value for value: squares bigger and smaller than the view, exactly its size,
    padded non-squares, a real photo; a configuration it does not cover (crop smaller than the
    resize) runs the processor itself."""
    from transformers import CLIPImageProcessorPil

    from teacher.semantic import clip_pixel_values

    base = CLIPImageProcessorPil.from_pretrained(FIXTURE).to_dict()
    processor = CLIPImageProcessorPil(**{**base, "size": {"shortest_edge": side},
                                         "crop_size": {"height": crop, "width": crop}})
    rng = np.random.default_rng(side + crop)
    photo = Image.open(REPO / "tests" / "fixtures" / "photos" / "chelsea.jpg").convert("RGB")
    images = [Image.fromarray(reference["tensors"]["image"].numpy()), photo.resize((1024, 1024)),
              Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)),
              Image.fromarray(rng.integers(0, 256, (17, 17, 3), dtype=np.uint8)),
              photo.resize((640, 480)), photo.resize((300, 701))]
    squares = [expand_to_square(im, processor.image_mean) for im in images]
    expected = processor.preprocess(squares, return_tensors="pt")["pixel_values"]
    if crop == side:  # the direct path must not call the processor
        processor.preprocess = lambda *a, **k: pytest.fail("the processor ran")
    got = clip_pixel_values(squares, processor)
    assert got.dtype == expected.dtype == torch.float32 and got.shape == (len(images), 3, crop, crop)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    if side == 28:  # and the original code's pixel values for the reference image
        torch.testing.assert_close(got[:1], reference["tensors"]["pixel_values"], atol=1e-6, rtol=0)


def test_semantic_encoder_matches_original_end_to_end(reference) -> None:
    """Image -> square pad -> CLIP -> tokens -> model -> mean: the original's vectors, both prompts."""
    encoder = SemanticEncoder.from_pretrained(SemanticConfig(model_path=str(FIXTURE), dtype="float32"), device="cpu")
    assert encoder.hidden_size == 64
    assert [encoder.backend.prompt_text(q) for q in DEFAULT_PROMPTS] == reference["json"]["prompt_texts"]
    image = Image.fromarray(reference["tensors"]["image"].numpy())
    other = Image.fromarray(np.full((30, 20, 3), 200, np.uint8))
    vectors = encoder.encode([other, image, other])  # batched with other images
    for index in range(len(DEFAULT_PROMPTS)):
        torch.testing.assert_close(vectors[1, index], reference["tensors"][f"vector_{index}"], atol=ATOL, rtol=0)
    torch.testing.assert_close(vectors[0], vectors[2], atol=ATOL, rtol=0)


def test_uint8_levels_give_the_encoders_vectors_bit_for_bit(reference) -> None:
    """Workers feeding a GPU send the 448 view as uint8 levels (SquareInputs(levels=True)), looked
    up on the model's device: the same pixel values, so the same vectors, as the float32 path."""
    encoder = SemanticEncoder.from_pretrained(SemanticConfig(model_path=str(FIXTURE), dtype="float32"), device="cpu")
    photo = Image.open(REPO / "tests" / "fixtures" / "photos" / "chelsea.jpg").convert("RGB")
    images = [Image.fromarray(reference["tensors"]["image"].numpy()), photo, photo.resize((300, 701))]
    floats, levels = encoder.inputs(), encoder.inputs(levels=True)
    float_inputs, level_inputs = [floats(im) for im in images], [levels(im) for im in images]
    side = encoder.backend.pixel_processor.crop_size.height
    assert all(a.dtype == np.float32 and a.shape == (3, side, side) for a in float_inputs)
    assert all(a.dtype == np.uint8 and a.shape == (side, side, 3) for a in level_inputs)
    expected = encoder.encode(images)
    assert torch.equal(encoder.encode_prepared(float_inputs), expected)
    assert torch.equal(encoder.encode_prepared(level_inputs), expected)


def _write_bin_shards(folder: Path, extra: dict[str, torch.Tensor]) -> None:
    """Replace model.safetensors with two pytorch_model-*.bin shards + index (the 7B's layout)."""
    state = {**load_file(str(FIXTURE / "model.safetensors")), **extra}
    (folder / "model.safetensors").unlink(missing_ok=True)
    names = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    for shard, keys in shards.items():
        torch.save({k: state[k] for k in keys}, folder / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_bin_shards_ignore_only_rebuilt_tables(tmp_path: Path, model, reference) -> None:
    folder = tmp_path / "owl2"
    shutil.copytree(FIXTURE, folder)
    rotary = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": torch.ones(8) for i in range(2)}
    _write_bin_shards(folder, rotary)
    loaded, ignored = load_mplug_owl2(folder)
    assert ignored == sorted(rotary)
    ids = reference["json"]["token_ids"]["legacy"]
    with torch.inference_mode():
        torch.testing.assert_close(loaded(reference["tensors"]["pixel_values"], ids)[0],
                                   model(reference["tensors"]["pixel_values"], ids)[0], atol=0, rtol=0)

    _write_bin_shards(folder, {"model.extra.weight": torch.ones(1)})  # an unknown key is an error
    with pytest.raises(ValueError, match=r"unexpected \['model.extra.weight'\]"):
        load_mplug_owl2(folder)


def _write_conversion_layout(folder: Path) -> dict[str, torch.Tensor]:
    """The layout X-PLUG's convert_mplug_owl2_weight_to_hf.py writes for the released 7B: one
    ``pytorch_model-{i}-of-{N}.bin`` per LLM layer (with that layer's ``rotary_emb.inv_freq``), a last
    shard with everything else but WITHOUT the abstractor's position tables, and the index json."""
    state = load_file(str(FIXTURE / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("model.layers."))
    count, inv_freq, weight_map = layers + 1, {}, {}
    for layer in range(layers):
        prefix = f"model.layers.{layer}."
        shard = {k: state[k] for k in state if k.startswith(prefix)}
        inv_freq[prefix + "self_attn.rotary_emb.inv_freq"] = torch.rand(4)
        shard.update({k: v for k, v in inv_freq.items() if k.startswith(prefix)})
        weight_map.update(dict.fromkeys(shard, f"pytorch_model-{layer + 1}-of-{count}.bin"))
        torch.save(shard, folder / f"pytorch_model-{layer + 1}-of-{count}.bin")
    rest = {k: v for k, v in state.items() if not k.startswith("model.layers.") and not k.endswith("_pos_embed")}
    weight_map.update(dict.fromkeys(rest, f"pytorch_model-{count}-of-{count}.bin"))
    torch.save(rest, folder / f"pytorch_model-{count}-of-{count}.bin")
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map, "metadata": {}}))
    return inv_freq


def test_conversion_script_layout_loads_without_position_tables(tmp_path: Path, reference) -> None:
    """The released checkpoint has no q_pos_embed/k_pos_embed: they are rebuilt, the rest loads strictly."""
    folder = tmp_path / "owl2"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("reference.*"))
    inv_freq = _write_conversion_layout(folder)
    assert not any("_pos_embed" in k for k in json.loads((folder / "pytorch_model.bin.index.json").read_text())
                   ["weight_map"])
    loaded, ignored = load_mplug_owl2(folder)
    assert ignored == sorted(inv_freq)
    tensors, ids = reference["tensors"], reference["json"]["token_ids"]["legacy"]
    with torch.inference_mode():
        for index, prompt_ids in enumerate(ids):
            hidden, _ = loaded(tensors["pixel_values"], [prompt_ids])
            torch.testing.assert_close(hidden[0], tensors[f"hidden_{index}"], atol=ATOL, rtol=0)
            torch.testing.assert_close(hidden.mean(1)[0], tensors[f"vector_{index}"], atol=ATOL, rtol=0)
    # Strict otherwise: a weight missing from a shard is still an error.
    shard = folder / "pytorch_model-1-of-3.bin"
    state = torch.load(shard, weights_only=True)
    del state["model.layers.0.mlp.up_proj.weight"]
    torch.save(state, shard)
    with pytest.raises(ValueError, match=r"missing \['model.layers.0.mlp.up_proj.weight'\]"):
        load_mplug_owl2(folder)


def _position_tables(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.endswith("_pos_embed")}


def _save_folder(folder: Path, state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("reference.*"))
    save_file(state, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("table_dtype, whole, load_dtype", [
    (torch.float16, False, torch.float32),   # fp32 weights, tables saved from a half buffer
    (torch.bfloat16, False, torch.float32),
    (torch.float16, True, torch.float32),    # the whole checkpoint saved from model.half()
    (torch.bfloat16, True, torch.float32),   # ... from model.to(torch.bfloat16)
    (torch.float16, True, torch.float16),    # ... and run in fp16, as the official vectors are
])
def test_stored_rounded_position_tables_are_loaded_and_used(tmp_path: Path, reference, table_dtype, whole,
                                                            load_dtype) -> None:
    """The original code registers q_pos_embed/k_pos_embed as persistent buffers, so a derived
    checkpoint holds them in its own dtype; the original then adds those stored values. The port
    must load them (not refuse them, not silently replace them by its fp32 table) and give exactly
    the outputs of a model whose tables were set by hand to the same rounded values."""
    state = load_file(str(FIXTURE / "model.safetensors"))
    state = {k: v.to(table_dtype) if v.is_floating_point() and (whole or k.endswith("_pos_embed")) else v
             for k, v in state.items()}
    stored = _position_tables(state)
    loaded, ignored = load_mplug_owl2(_save_folder(tmp_path / "derived", state), dtype=load_dtype)
    assert ignored == []
    buffers = dict(loaded.named_buffers())
    for key, table in stored.items():
        assert buffers[key].dtype == torch.float32 and torch.equal(buffers[key], table.float()), key
    # The same weights without tables (the released layout): rebuilt fp32 tables, then set by hand.
    plain, _ = load_mplug_owl2(_save_folder(tmp_path / "plain", {k: v for k, v in state.items() if k not in stored}),
                               dtype=load_dtype)
    pixels, ids = reference["tensors"]["pixel_values"], reference["json"]["token_ids"]["legacy"]
    with torch.inference_mode():
        got = loaded(pixels, ids)[0]
        rebuilt_tables = plain(pixels, ids)[0]
        for key, table in stored.items():
            owner, name = key.rsplit(".", 1)
            plain.get_submodule(owner).register_buffer(name, table.float(), persistent=False)
        expected = plain(pixels, ids)[0]
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    if load_dtype == torch.float32:  # the stored (rounded) values really are the ones used
        assert not torch.equal(got, rebuilt_tables)
    else:  # in fp16 the fp32 table is cast to fp16 in forward: the same values as the stored copy
        torch.testing.assert_close(got, rebuilt_tables, atol=0, rtol=0)


@pytest.mark.parametrize("table_dtype, change", [(torch.float32, 1e-3), (torch.float16, 1e-2),
                                                 (torch.bfloat16, 5e-2)])
def test_stored_position_table_that_differs_is_a_one_line_error(tmp_path: Path, table_dtype, change) -> None:
    """More than the stored dtype's rounding away from the sin-cos table: the file, the key and the
    largest difference, on one line."""
    state = {k: v.to(table_dtype) if k.endswith("_pos_embed") else v
             for k, v in load_file(str(FIXTURE / "model.safetensors")).items()}
    key = "model.visual_abstractor.encoder.layers.1.crossattention.attention.k_pos_embed"
    tampered = state[key].float()
    tampered[2, 3] += change
    state[key] = tampered.to(table_dtype)
    folder = _save_folder(tmp_path / "owl2", state)
    with pytest.raises(ValueError, match="is not the abstractor's sin-cos position table") as caught:
        load_mplug_owl2(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder / 'model.safetensors'}: checkpoint entry {key} (5, 32) ")
    assert "\n" not in message
    assert "largest difference" in message and "at (2, 3)" in message
    difference = float(message.split("largest difference ")[1].split(" ")[0])
    assert change * 0.5 < difference < change * 1.5


def test_stored_position_table_errors_name_the_shard_and_the_shape(tmp_path: Path) -> None:
    folder = tmp_path / "owl2"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("reference.*"))
    key = "model.visual_abstractor.encoder.layers.0.crossattention.attention.q_pos_embed"
    _write_bin_shards(folder, {key: torch.zeros(4, 32, dtype=torch.float16)})
    shard = json.loads((folder / "pytorch_model.bin.index.json").read_text())["weight_map"][key]
    with pytest.raises(ValueError, match=f"{shard}: checkpoint entry {key} .* largest difference 1 "):
        load_mplug_owl2(folder)
    _write_bin_shards(folder, {key: torch.zeros(3, 32)})
    with pytest.raises(ValueError, match=rf"{key} \(3, 32\) float32 is not the abstractor's sin-cos position "
                                         r"table \(4, 32\)"):
        load_mplug_owl2(folder)


def test_missing_key_and_bad_config_are_clear_errors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / "owl2"
    shutil.copytree(FIXTURE, folder)
    state = load_file(str(folder / "model.safetensors"))
    del state["model.layers.0.self_attn.k_proj.multiway.1.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['model.layers.0.self_attn.k_proj.multiway.1.weight'\]"):
        load_mplug_owl2(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ValueError, match="config.json: not an mPLUG-Owl2 config"):
        load_mplug_owl2(folder)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["visual_config"]["visual_model"].update(hidden_size="x"),
     r"visual_config.visual_model.hidden_size must be a positive integer, got 'x'"),
    (lambda c: c.update(num_attention_heads=5), r"hidden_size 64 is not divisible by num_attention_heads 5"),
    (lambda c: c["visual_config"]["visual_model"].update(num_attention_heads=3),
     r"visual_config.visual_model.hidden_size 32 is not divisible by num_attention_heads 3"),
    (lambda c: c["visual_config"]["visual_abstractor"].update(num_attention_heads=0),
     r"visual_config.visual_abstractor.num_attention_heads must be a positive integer, got 0"),
    (lambda c: c.update(num_key_value_heads=3), r"num_attention_heads 4 is not divisible by num_key_value_heads 3"),
    (lambda c: c.update(rms_norm_eps="tiny"), r"rms_norm_eps must be a positive number"),
    (lambda c: c.update(hidden_act="nope"), r"hidden_act must be an activation name"),
    (lambda c: c["visual_config"]["visual_abstractor"].update(grid_size=3), r"grid_size 3 must be"),
    (lambda c: c["visual_config"].update(visual_model=[1]), r"not an mPLUG-Owl2 config"),
])
def test_bad_config_values_are_one_line_errors_naming_the_file(tmp_path: Path, edit, message) -> None:
    folder = tmp_path / "owl2"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("reference.*"))
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message) as caught:
        load_mplug_owl2(folder)
    assert str(caught.value).startswith(f"{folder / 'config.json'}: ") and "\n" not in str(caught.value)


def test_model_construction_errors_name_the_config_file(tmp_path: Path, monkeypatch) -> None:
    import teacher.mplug_owl2 as owl

    def broken(config):
        raise RuntimeError("layer rejected the config")

    monkeypatch.setattr(owl, "MplugOwl2", broken)
    with pytest.raises(ValueError, match=r"config.json: cannot build mPLUG-Owl2 from it \(RuntimeError: layer"):
        owl.load_mplug_owl2(FIXTURE)


def test_default_config_is_the_7b() -> None:
    config = MplugOwl2Config()
    assert (config.hidden_size, config.num_hidden_layers, config.vision.num_hidden_layers) == (4096, 32, 24)
    assert (config.vision.image_size // config.vision.patch_size) ** 2 + 1 == 1025
    assert config.abstractor.num_learnable_queries + 1 == 65


def test_llava_in_the_same_process_still_works(tmp_path: Path, model) -> None:
    """No global patching: a LLaMA-based LLaVA loaded after mPLUG-Owl2 gives the same vectors."""
    from teacher.tiny_mllm import save_tiny_mllm

    folder = save_tiny_mllm(tmp_path / "llava", seed=0)
    images = [Image.fromarray(np.full((24, 40, 3), 90, np.uint8))]
    before = SemanticEncoder.from_pretrained(SemanticConfig(model_path=str(folder)), device="cpu").encode(images)
    load_mplug_owl2(FIXTURE)
    after = SemanticEncoder.from_pretrained(SemanticConfig(model_path=str(folder)), device="cpu").encode(images)
    torch.testing.assert_close(after, before, atol=0, rtol=0)


def test_label_cli_with_mplug_owl2_teacher_folder(tmp_path: Path, reference) -> None:
    """The user path: a teacher folder from configs/teacher_mplug_owl2.json and an mPLUG-Owl2 folder
    in the checkpoint's layout, labelled by `python -m distill label` in a subprocess."""
    from teacher.cache_read import LabelCache

    teacher = tmp_path / "teacher"
    shutil.copytree(FIXTURE, teacher / "mplug-owl2-llama2-7b",
                    ignore=shutil.ignore_patterns("reference.*"))
    config = json.loads((REPO / "configs" / "teacher_mplug_owl2.json").read_text())
    assert config["semantic"]["model_path"] == "mplug-owl2-llama2-7b"
    assert not config["semantic"].get("trust_remote_code", False)
    # Tiny MANIQA and no MA-AGIQA checkpoint (seeded random fusion) keep this fast; fp32 on CPU.
    config.update(maniqa="tiny", weights=None)
    config["semantic"]["dtype"] = "float32"
    (teacher / "teacher.json").write_text(json.dumps(config))
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(reference["tensors"]["image"].numpy()).save(images / "a.png")
    Image.fromarray(np.full((40, 30, 3), 120, np.uint8)).save(images / "b.png")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "distill", "label", str(images), "--out", str(tmp_path / "cache"),
                           "--teacher", str(teacher), "--device", "cpu", "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["labelled"] == 2
    cache = LabelCache.open(tmp_path / "cache")
    vectors = cache.get("a.png").semantic_vectors
    assert vectors.shape == (2, 64)
    for index in range(2):  # the original code's vectors for this very image (the cache stores fp16)
        expected = reference["tensors"][f"vector_{index}"]
        torch.testing.assert_close(vectors[index].float(), expected.half().float(), atol=2e-3, rtol=0)


class _NotATensor:
    """Pickled into a .bin shard: `weights_only=True` must refuse it."""


def test_pickled_code_in_a_bin_shard_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "owl2"
    shutil.copytree(FIXTURE, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"model.norm.weight": _NotATensor()}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin: cannot read checkpoint shard"):
        load_mplug_owl2(folder)
