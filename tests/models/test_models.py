import pytest
import torch
from torch import nn

from simmim.errors import ConfigError
from simmim.losses import SimMIMObjective
from simmim.models import MODEL_SIZES, create_model, model_config
from simmim.models.layers import (
    ClassToken,
    LearnedQueries,
    LogitScale,
    MaskToken,
    PositionEmbedding,
    patchify,
    unpatchify,
)

SUPPORTED = (nn.Linear, nn.LayerNorm, nn.Embedding, PositionEmbedding, ClassToken, MaskToken, LearnedQueries,
             LogitScale)


def _batch(cfg, n=4, generator=None):
    g = generator or torch.Generator().manual_seed(0)
    tokens = torch.randint(4, cfg.vocab_size, (n, cfg.context_length), generator=g)
    tokens[:, 0], tokens[:, 8], tokens[:, 9:] = 1, 2, 0
    mask = torch.zeros(n, cfg.num_patches, dtype=torch.bool)
    mask[:, ::3] = True
    return {"images": torch.rand(n, 3, cfg.image_size, cfg.image_size, generator=g), "text": tokens,
            "caption": tokens.clone(), "groups": torch.arange(n), "mask": mask}


@pytest.mark.parametrize("size", ["tiny", "demo"])
def test_every_parameter_lives_in_a_supported_leaf_module(size):
    model = create_model(size)
    assert not list(model.buffers()), "trainable modules must hold no buffers"
    owned = set()
    for module in model.modules():
        direct = list(module.parameters(recurse=False))
        if direct:
            assert isinstance(module, SUPPORTED), f"{type(module).__name__} holds parameters"
            owned.update(id(p) for p in direct)
    assert owned == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("size", list(MODEL_SIZES))
def test_named_sizes_build_and_embed_into_one_normalised_space(size):
    model = create_model(size).eval()
    cfg = model.cfg
    batch = _batch(cfg, n=2)
    with torch.no_grad():
        image = model.encode_image(batch["images"])
        text = model.encode_text(batch["text"])
        video = model.encode_video(torch.rand(2, 3, 3, cfg.image_size, cfg.image_size))
    for emb in (image, text, video):
        assert emb.shape == (2, cfg.embed_dim)
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))


def test_patchify_roundtrip_and_conv_order():
    images = torch.rand(2, 3, 8, 8)
    patches = patchify(images, 4)
    assert patches.shape == (2, 4, 48)
    torch.testing.assert_close(unpatchify(patches, 4), images)
    # Flattened like a Conv2d kernel (C, p, p): a conv with the reshaped weight gives the same embedding.
    weight = torch.randn(5, 3, 4, 4)
    conv = torch.nn.functional.conv2d(images, weight, stride=4).flatten(2).transpose(1, 2)
    torch.testing.assert_close(patches @ weight.reshape(5, -1).t(), conv)


def test_mask_changes_only_masked_inputs():
    model = create_model("tiny").eval()
    cfg = model.cfg
    images = torch.rand(1, 3, cfg.image_size, cfg.image_size)
    mask = torch.zeros(1, cfg.num_patches, dtype=torch.bool)
    mask[0, 0] = True
    other = images.clone()
    other[:, :, :cfg.patch_size, :cfg.patch_size] = 0  # change pixels of the masked patch only
    with torch.no_grad():
        torch.testing.assert_close(model.visual(images, mask), model.visual(other, mask))
        assert not torch.allclose(model.visual(images), model.visual(other))


def test_text_encoder_is_causal_and_pools_at_eos():
    model = create_model("tiny").eval()
    batch = _batch(model.cfg, n=1)
    changed = batch["text"].clone()
    changed[0, 12] = 7  # after the eos at 8: must not change the pooled embedding
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(batch["text"]), model.encode_text(changed))


def test_non_contrastive_losses_are_per_example():
    """Changing example 0 changes no other example's caption, masked-patch or generation loss."""
    torch.manual_seed(0)
    model = create_model("tiny").eval()
    objective = SimMIMObjective()
    batch = _batch(model.cfg)
    other = {k: v.clone() for k, v in batch.items()}
    other["images"][0] = torch.rand_like(other["images"][0])
    other["text"][0, 1:8] = torch.randint(4, model.cfg.vocab_size, (7,))
    with torch.no_grad():
        a, b = objective.per_example(model, batch), objective.per_example(model, other)
    for name in ("caption", "masked_patch", "generation"):
        assert not torch.allclose(a[name][0], b[name][0])
        torch.testing.assert_close(a[name][1:], b[name][1:])
    assert not torch.allclose(a["contrastive"][1:], b["contrastive"][1:])  # coupled, as documented


def test_greedy_and_beam_decoding_return_valid_tokens():
    model = create_model("tiny").eval()
    images = torch.rand(2, 3, 32, 32)
    greedy = model.caption_tokens(images, bos_id=1, eos_id=2)
    beam = model.caption_tokens(images, bos_id=1, eos_id=2, beam_size=3)
    for rows in (greedy, beam):
        assert len(rows) == 2
        assert all(0 <= t < model.cfg.vocab_size for row in rows for t in row)


def test_bad_model_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="multiple of model.patch_size"):
        model_config("tiny", image_size=30)
    with pytest.raises(ConfigError, match="unknown model size"):
        model_config("huge")


def test_contrastive_loss_within_blocks_depends_on_the_block_alone():
    from simmim.losses import contrastive_loss

    model = create_model("tiny").eval()
    g = torch.Generator().manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(6, 32, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(6, 32, generator=g), dim=-1)
    groups = torch.tensor([0, 1, 1, 2, 3, 4])
    blocks = torch.tensor([0, 0, 0, 1, 1, 1])
    base = contrastive_loss(a, b, model.fusion.logits, groups, blocks)
    changed_a = a.clone()
    changed_a[4] = torch.nn.functional.normalize(torch.randn(32, generator=g), dim=0)
    after = contrastive_loss(changed_a, b, model.fusion.logits, groups, blocks)
    torch.testing.assert_close(base[:3], after[:3])  # block 0 untouched by a change in block 1
    assert not torch.allclose(base[3:], after[3:])
    assert torch.isfinite(base).all()
    # One block holding everything is the ordinary loss.
    torch.testing.assert_close(contrastive_loss(a, b, model.fusion.logits, groups, torch.zeros(6, dtype=torch.long)),
                               contrastive_loss(a, b, model.fusion.logits, groups))
