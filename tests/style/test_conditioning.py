"""What the style token sees: the L2-normalised CLIP embedding, and the reference's CLIP input cast."""

from __future__ import annotations

import numpy as np
import torch

import instlib.style.conditioning as conditioning
from instlib.config import TokenTrainingConfig
from instlib.style import load_token, stylize_images, train_style_token
from instlib.style.conditioning import image_embeddings, reference_clip_cast, token_embeddings
from instlib.style.transfer import TransferConfig
from style_helpers import RES, random_uint8


def test_reference_cast_maps_known_pixels_exactly():
    pixels = np.array([0, 1, 2, 100, 127, 128, 200, 254, 255], np.uint8)
    img = np.stack([pixels, pixels[::-1], np.full_like(pixels, 255)], axis=-1)[None]  # (1, 9, 3)
    expected = {0: 255, 255: 1}
    want = np.vectorize(lambda v: expected.get(int(v), 0))(img).astype(np.uint8)
    assert np.array_equal(reference_clip_cast(img), want)
    # the authors' expression on the [-1, 1] tensor gives the same where its cast is well defined
    x = torch.from_numpy(img[None]).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]
    theirs = x[0].permute(1, 2, 0).cpu().numpy().astype(np.uint8)
    assert np.array_equal(reference_clip_cast(img), theirs)


def test_image_embeddings_are_l2_normalised(tiny):
    images = [random_uint8((RES, RES, 3), s) for s in (1, 2, 3)]
    embeds = image_embeddings(tiny, images)
    assert embeds.dtype == torch.float32
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(3))
    pixels = tiny.image_processor(images=images, return_tensors="pt").pixel_values
    raw = tiny.image_encoder(pixel_values=pixels).image_embeds
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3), atol=1e-3)  # the encoder's own scale is not 1
    torch.testing.assert_close(embeds, raw / raw.norm(dim=-1, keepdim=True))


def test_reference_input_hides_the_image(tiny):
    a = np.clip(random_uint8((RES, RES, 3), 4), 1, 254)
    a[:4], a[-4:] = 0, 255  # some saturated pixels, which the cast keeps
    b = a.copy()
    b[4:-4] = np.clip(a[4:-4].astype(int) + 60, 1, 254).astype(np.uint8)  # other in-between values only
    ref_a, ref_b = image_embeddings(tiny, [a, b], reference_clip_input=True)
    torch.testing.assert_close(ref_a, ref_b)  # CLIP saw the same mask
    torch.testing.assert_close(ref_a, image_embeddings(tiny, [reference_clip_cast(a)])[0])
    plain = image_embeddings(tiny, [a, b])
    assert not torch.allclose(plain[0], plain[1], atol=1e-4)


def test_token_records_the_switch_and_transfer_uses_it(tiny, folders, tmp_path, monkeypatch):
    out = train_style_token(folders["real"], tmp_path / "ref.safetensors", tiny, TokenTrainingConfig(steps=1, resolution=RES, reference_clip_input=True),
                            progress=False)
    token = load_token(out)
    assert token.reference_clip_input and token.info["reference_clip_input"] is True
    assert not load_token(train_style_token(folders["real"], tmp_path / "own.safetensors", tiny, TokenTrainingConfig(steps=1, resolution=RES),
                                            progress=False)).reference_clip_input
    style = random_uint8((RES, RES, 3), 9)
    with torch.no_grad():
        expected = token.block(image_embeddings(tiny, [reference_clip_cast(style)]))
    torch.testing.assert_close(token_embeddings(tiny, [token], [style]), expected)
    seen = []
    real = conditioning.image_embeddings
    monkeypatch.setattr(conditioning, "image_embeddings",
                        lambda c, imgs, ref=False: seen.append(ref) or real(c, imgs, ref))
    stylize_images(tiny, token, [random_uint8((RES, RES, 3), 1)], [style], TransferConfig(steps=4, resolution=RES), [0])
    assert seen == [True]
