"""The style token block, its safetensors file, and how it enters the text encoder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from instlib.errors import DataError, InstlibError
from instlib.style import load_token, load_tokens, save_token
from instlib.style.conditioning import check_token, encode_prompts, placeholder_id
from instlib.data.tensorfile import tensor_digest
from instlib.style.tokens import FORMAT, TokenConfig, new_token, token_metadata


def test_block_matches_the_reference_layout():
    token = new_token(768)
    names = set(token.block.state_dict())
    assert {"attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight", "attn1.to_out.0.weight",
            "attn2.to_k.weight", "net.1.weight", "net.1.bias"} <= names
    assert token.block.attn1.to_q.weight.shape == (512, 768)  # 8 heads x 64
    assert token.block.config == TokenConfig(dim=768, heads=8, head_dim=64, dropout=0.05)
    out = token.block(torch.randn(3, 768))
    assert out.shape == (3, 768)


def test_round_trip_is_bit_exact(tmp_path):
    token = new_token(32, base_model="tiny", category=(5, 40), seed=11)
    token.info = {"steps": 7}
    path = save_token(token, tmp_path / "t.safetensors")
    back = load_token(path)
    for key, value in token.block.state_dict().items():
        assert torch.equal(value, back.block.state_dict()[key])
    assert (back.placeholder, back.base_model, back.category, back.info) == ("*", "tiny", (5, 40), {"steps": 7})
    assert back.block.config == token.block.config and not back.block.training
    assert load_tokens(tmp_path)[0].category == (5, 40)


def test_tampered_file_is_refused(tmp_path):
    path = save_token(new_token(32), tmp_path / "t.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # flip one bit of the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="modified") as err:
        load_token(path)
    assert err.value.path == path


def test_truncated_or_foreign_file_is_refused(tmp_path):
    path = save_token(new_token(32), tmp_path / "t.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="not a readable safetensors"):
        load_token(path)
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(DataError, match="not an instlib.style-token"):
        load_token(other)
    with pytest.raises(DataError, match="no such token file"):
        load_token(tmp_path / "missing.safetensors")


def test_wrong_shape_is_refused(tmp_path):
    token = new_token(32)
    tensors = {k: v.clone() for k, v in token.block.state_dict().items()}
    tensors["net.1.weight"] = torch.zeros(32, 16)
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata={**token_metadata(token), "format": FORMAT,  # a consistent checksum, wrong shape
                                            "sha256": tensor_digest(tensors)})
    with pytest.raises(DataError, match=r"net.1.weight.*shape \(32, 16\).*needs \(32, 32\)"):
        load_token(path)


def test_missing_tensor_is_refused(tmp_path):
    token = new_token(32)
    tensors = {k: v for k, v in token.block.state_dict().items() if k != "net.1.bias"}
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata={"format": FORMAT, "sha256": tensor_digest(tensors),
                                            "config": json.dumps({"dim": 32})})
    with pytest.raises(DataError, match="net.1.bias"):
        load_token(path)


def test_token_for_another_model_is_refused(tiny):
    with pytest.raises(InstlibError, match="does not fit"):
        check_token(tiny, new_token(768, base_model="CompVis/stable-diffusion-v1-4"))


def test_injection_equals_setting_the_embedding_row(tiny):
    """The hook must act exactly like writing the vector into the placeholder's embedding row."""
    vec = torch.randn(2, tiny.hidden_size)
    prompts = ["*", "a * b"]
    injected = encode_prompts(tiny, prompts, vec)
    table = tiny.text_encoder.get_input_embeddings().weight
    pid = placeholder_id(tiny, "*")
    saved = table[pid].clone()
    expected = []
    try:
        for p, v in zip(prompts, vec):
            table.data[pid] = v
            expected.append(encode_prompts(tiny, [p]))
    finally:
        table.data[pid] = saved
    torch.testing.assert_close(injected, torch.cat(expected))
    plain = encode_prompts(tiny, prompts)
    assert not torch.allclose(plain, injected)
    torch.testing.assert_close(encode_prompts(tiny, [""] * 2, vec), encode_prompts(tiny, [""] * 2))


def test_injection_carries_gradients(tiny):
    vec = torch.randn(1, tiny.hidden_size, requires_grad=True)
    encode_prompts(tiny, ["*"], vec).sum().backward()
    assert vec.grad is not None and vec.grad.abs().sum() > 0


def test_placeholder_must_be_one_token(tiny):
    with pytest.raises(InstlibError, match="must be one"):
        placeholder_id(tiny, "ab")
