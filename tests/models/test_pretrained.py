"""CLIP import: parity with Hugging Face's CLIPModel on tiny random checkpoints, and the errors.

Every checkpoint here is written by the test itself from a random `CLIPModel`; nothing is
downloaded. Tests that need transformers skip without the `[hf]` extra.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from simmim.errors import CheckpointError, ConfigError
from simmim.models.pretrained import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    clip_model_config,
    clip_tokenizer,
    load_clip,
    weight_table,
)

VOCAB, BOS, EOS, PAD = 99, 97, 98, 1
LOGIT_SCALE = 3.3  # differs from the config's 2.6592, so the test sees the checkpoint value is used
SIMMIM_ONLY = (
    "temporal.", "patch_head.", "captioner.", "generator.", "fusion.video_proj.", "visual.mask_token."
)

# A tiny CLIP BPE vocabulary (end-of-word suffix "</w>"), ids well below VOCAB.
TOKENS = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>", "t</w>",
          "low</w>", "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>", "<|startoftext|>",
          "<|endoftext|>"]
MERGES = "#version: 0.2\nl o\nlo w</w>\ne r</w>\n"


def _save_clip(folder: Path, activation: str = "quick_gelu", intermediate: int = 37, eos_token_id: int = EOS,
               bos_token_id: int = BOS, **save_kwargs):
    """Write a tiny random CLIPModel with non-trivial weights everywhere; return it (eval mode)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    common = dict(hidden_size=32, intermediate_size=intermediate, num_hidden_layers=2, num_attention_heads=4,
                  hidden_act=activation)
    config = transformers.CLIPConfig(
        text_config=dict(common, vocab_size=VOCAB, max_position_embeddings=24, eos_token_id=eos_token_id,
                         bos_token_id=bos_token_id, pad_token_id=PAD),
        vision_config=dict(common, image_size=32, patch_size=4),
        projection_dim=16,
    )
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():  # LayerNorms start at 1/0: perturb so every copy is tested
            param.add_(torch.randn_like(param) * 0.05)
        model.logit_scale.fill_(LOGIT_SCALE)
    model.save_pretrained(folder, **save_kwargs)
    return model


def _features(output) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features, 4.x a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _hf_image(hf, pixels: torch.Tensor, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> torch.Tensor:
    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return F.normalize(_features(hf.get_image_features(pixel_values=(pixels - mean) / std)), dim=-1)


def _hf_text(hf, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(_features(hf.get_text_features(input_ids=ids)), dim=-1)


def _ids(eos: int, pad: int, lengths=(3, 10, 24)) -> torch.Tensor:
    """Rows of bos, random words (below every special id), eos, then padding; one row is full."""
    gen = torch.Generator().manual_seed(1)
    rows = []
    for length in lengths:
        words = torch.randint(3, 90, (length - 2,), generator=gen).tolist()
        rows.append(([BOS] + words + [eos] + [pad] * 24)[:24])
    return torch.tensor(rows)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    return folder, _save_clip(folder)


@pytest.fixture
def folder_copy(clip_folder, tmp_path):
    """A private copy of the shared checkpoint, for tests that break it."""
    target = tmp_path / "clip"
    shutil.copytree(clip_folder[0], target)
    return target


def _edit_config(folder: Path, edit) -> None:
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def _raises(folder, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_clip(folder)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# Parity with Hugging Face.


@pytest.mark.parametrize("activation,intermediate", [("quick_gelu", 37), ("gelu", 64)])
def test_embeddings_match_hf(tmp_path, activation, intermediate):
    hf = _save_clip(tmp_path, activation, intermediate)
    model, info = load_clip(tmp_path)
    cfg = info.config
    assert (cfg.activation, cfg.width, cfg.depth, cfg.heads, cfg.text_width, cfg.text_depth) == (
        activation, 32, 2, 4, 32, 2)
    assert int(cfg.width * cfg.mlp_ratio) == intermediate
    assert (cfg.image_size, cfg.patch_size, cfg.context_length) == (32, 4, 24)
    assert (cfg.vocab_size, cfg.eos_id, cfg.embed_dim) == (VOCAB, EOS, 16)
    assert cfg.pre_norm and cfg.pixel_mean == OPENAI_CLIP_MEAN and cfg.pixel_std == OPENAI_CLIP_STD

    pixels = torch.rand(3, 3, 32, 32)
    ids = _ids(EOS, PAD)
    with torch.no_grad():
        ours_image, ours_text = model.encode_image(pixels), model.encode_text(ids)
    torch.testing.assert_close(ours_image, _hf_image(hf, pixels), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_text, _hf_text(hf, ids), atol=1e-5, rtol=1e-5)
    assert model.fusion.logit_scale.weight.item() == pytest.approx(LOGIT_SCALE)
    assert cfg.init_logit_scale == pytest.approx(hf.logit_scale.item())


def test_text_pools_at_first_eos_when_padding_is_eos(clip_folder):
    folder, hf = clip_folder
    model, _ = load_clip(folder)
    ids = _ids(EOS, EOS)  # pad == eos, as with OpenAI's tokenizer: the first eos must be used
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(ids), _hf_text(hf, ids), atol=1e-5, rtol=1e-5)


def test_legacy_eos_token_id_pools_like_hf_argmax(tmp_path):
    # eos_token_id == 2 makes HF pool at argmax(ids): the end-of-text token, CLIP's highest id.
    hf = _save_clip(tmp_path, eos_token_id=2, bos_token_id=VOCAB - 2)
    model, info = load_clip(tmp_path)
    assert info.config.eos_id == VOCAB - 1
    assert "legacy" in info.eos_pooling
    ids = _ids(VOCAB - 1, 0)
    ids[:, 0] = VOCAB - 2  # bos below eos, as in CLIP's vocabulary
    ids[1, 3] = 2  # an id equal to the legacy eos_token_id must not be pooled at
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(ids), _hf_text(hf, ids), atol=1e-5, rtol=1e-5)


def test_report_lists_loaded_new_and_unused(clip_folder, folder_copy):
    model, info = load_clip(clip_folder[0])
    params = dict(model.named_parameters())
    assert set(info.loaded) | set(info.new) == set(params) and not set(info.loaded) & set(info.new)
    # Everything CLIP has is loaded; exactly SimMIM's own parts are new.
    assert {name for name in params if name.startswith(SIMMIM_ONLY)} == set(info.new)
    assert info.unused == ()
    assert len(info.loaded) == len(weight_table(info.config))
    assert "loaded" in info.summary() and "\n" not in info.summary()
    # Old checkpoints carry position_ids buffers (ignored); anything else unknown is reported.
    weights = load_file(folder_copy / "model.safetensors")
    weights["text_model.embeddings.position_ids"] = torch.arange(24)[None]
    weights["extra.head.weight"] = torch.zeros(2, 2)
    save_file(weights, folder_copy / "model.safetensors", metadata={"format": "pt"})
    assert load_clip(folder_copy)[1].unused == ("extra.head.weight",)


def test_decoder_sizes_can_be_chosen_but_not_imported_fields(clip_folder):
    model, info = load_clip(clip_folder[0], decoder_depth=1, decoder_width=16)
    assert (info.config.decoder_depth, info.config.decoder_width) == (1, 16)
    assert len(model.captioner.blocks) == 1
    assert load_clip(clip_folder[0])[1].config.decoder_width == 32  # defaults to the image width
    with pytest.raises(ConfigError, match="width"):
        load_clip(clip_folder[0], width=64)


def test_preprocessor_config_sets_pixel_statistics(clip_folder, folder_copy):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    (folder_copy / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
    model, info = load_clip(folder_copy)
    assert (info.config.pixel_mean, info.config.pixel_std) == (mean, std)
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(pixels), _hf_image(clip_folder[1], pixels, mean, std),
                                   atol=1e-5, rtol=1e-5)


def test_sharded_checkpoint(tmp_path):
    hf = _save_clip(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model, _ = load_clip(tmp_path)
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(pixels), _hf_image(hf, pixels), atol=1e-5, rtol=1e-5)


def test_config_defaults_fill_keys_old_files_omit(folder_copy):
    def drop(raw: dict) -> None:
        for key in ("hidden_act", "layer_norm_eps"):
            del raw["text_config"][key]

    _edit_config(folder_copy, drop)
    cfg, _ = clip_model_config(folder_copy)
    assert cfg.activation == "quick_gelu"  # HF's default


# Errors: one line each, naming what is wrong.


def test_missing_folder(tmp_path):
    _raises(tmp_path / "nowhere", "does not exist")


def test_missing_config(folder_copy):
    (folder_copy / "config.json").unlink()
    _raises(folder_copy, "no config.json")


def test_unreadable_config(folder_copy):
    (folder_copy / "config.json").write_text("{not json")
    _raises(folder_copy, "cannot read", "config.json")


def test_not_clip(folder_copy):
    _edit_config(folder_copy, lambda raw: raw.update(model_type="siglip"))
    _raises(folder_copy, "model_type 'siglip'", "not 'clip'")


def test_missing_weights(folder_copy):
    (folder_copy / "model.safetensors").unlink()
    _raises(folder_copy, "no model.safetensors")


def test_corrupt_weights(folder_copy):
    (folder_copy / "model.safetensors").write_bytes(b"not a safetensors file")
    _raises(folder_copy, "cannot read", "model.safetensors")


def test_missing_key(folder_copy):
    weights = load_file(folder_copy / "model.safetensors")
    del weights["text_projection.weight"]
    save_file(weights, folder_copy / "model.safetensors", metadata={"format": "pt"})
    _raises(folder_copy, "lacks key text_projection.weight")


def test_shape_mismatch_names_key_and_shapes(folder_copy):
    _edit_config(folder_copy, lambda raw: raw["text_config"].update(max_position_embeddings=30))
    _raises(folder_copy, "text_model.embeddings.position_embedding.weight", "(24, 32)", "(30, 32)")


def test_patch_shape_mismatch(folder_copy):
    _edit_config(folder_copy, lambda raw: raw["vision_config"].update(patch_size=8))
    _raises(folder_copy, "patch_embedding.weight", "(32, 3, 4, 4)", "(32, 3, 8, 8)")


def test_unsupported_activation(folder_copy):
    _edit_config(folder_copy, lambda raw: raw["vision_config"].update(hidden_act="gelu_new"))
    _raises(folder_copy, "hidden_act 'gelu_new'", "quick_gelu, gelu")


def test_image_size_not_divisible_by_patch_size(folder_copy):
    _edit_config(folder_copy, lambda raw: raw["vision_config"].update(image_size=30))
    _raises(folder_copy, "image_size (30)", "patch_size (4)")


def test_unsupported_layer_norm_eps(folder_copy):
    _edit_config(folder_copy, lambda raw: raw["text_config"].update(layer_norm_eps=1e-6))
    _raises(folder_copy, "layer_norm_eps")


# Tokenizer.


def _write_vocab(folder: Path) -> None:
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(TOKENS)}))
    (folder / "merges.txt").write_text(MERGES)


def test_tokenizer_pads_to_context_and_feeds_the_model(tmp_path):
    eos, bos = TOKENS.index("<|endoftext|>"), TOKENS.index("<|startoftext|>")
    hf = _save_clip(tmp_path, eos_token_id=eos, bos_token_id=bos)
    _write_vocab(tmp_path)
    tokenize = clip_tokenizer(tmp_path)
    ids = tokenize(["lower newer", "low " * 40])
    assert ids.dtype == torch.long and ids.shape == (2, 24) and tokenize("low").shape == (1, 24)
    assert (tokenize.eos_id, tokenize.bos_id) == (eos, bos)
    assert (ids[:, 0] == bos).all() and (ids == eos).any(dim=1).all()
    assert ids[1, -1] == eos  # a long text is truncated but keeps its end-of-text token
    model, _ = load_clip(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(ids), _hf_text(hf, ids), atol=1e-5, rtol=1e-5)


def test_tokenizer_needs_vocabulary_files(folder_copy):
    with pytest.raises(CheckpointError, match="vocab.json or merges.txt"):
        clip_tokenizer(folder_copy)


def test_tokenizer_needs_transformers(folder_copy, monkeypatch):
    _write_vocab(folder_copy)
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(CheckpointError, match=r"install simmim\[hf\]"):
        clip_tokenizer(folder_copy)
