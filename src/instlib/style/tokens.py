"""The style token: an attention block that turns a CLIP image embedding into the input embedding of
the placeholder token ``*``, and its safetensors file.

The block is the reference's ``Attentions`` (self-attention over the single image token, cross-attention
to the embedding, dropout, linear), built from diffusers' :class:`Attention` so that parameter names
match the reference (``attn1.to_q.weight``, ..., ``net.1.bias``). A token file holds the block's tensors
and, as metadata, its config, the placeholder, the base model, the optional count category, whether
it saw the reference's CLIP input (``reference_clip_input``) and its training record (``info``: settings
and the names of the images it saw); :mod:`instlib.data.tensorfile` adds a SHA-256 of the tensors, so a
modified or truncated file is refused instead of silently used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from instlib.data.tensorfile import read_tensors, write_tensors
from instlib.errors import DataError

FORMAT = "instlib.style-token"
VERSION = "1"


@dataclass(frozen=True)
class TokenConfig:
    """Shape of the block. The reference: width 768 (SD v1's token width), 8 heads x 64, dropout 0.05."""

    dim: int
    heads: int = 8
    head_dim: int = 64
    dropout: float = 0.05


class StyleTokenBlock(nn.Module):
    """``(B, dim)`` CLIP image embeddings to ``(B, dim)`` placeholder-token embeddings."""

    def __init__(self, config: TokenConfig):
        super().__init__()
        self.config = config
        kw = dict(query_dim=config.dim, heads=config.heads, dim_head=config.head_dim, dropout=config.dropout)
        self.attn1 = Attention(**kw)  # self-attention over the one image token
        self.attn2 = Attention(cross_attention_dim=config.dim, **kw)  # attends back to the embedding
        self.net = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.dim, config.dim))

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        x = image_embeds[:, None, :]
        h = self.attn2(self.attn1(x), encoder_hidden_states=x)
        return self.net(h)[:, 0]


@dataclass
class StyleToken:
    """A trained block with what it belongs to. ``category``: the (lo, hi) count range it was trained on;
    ``reference_clip_input``: its CLIP input is the reference's cast (transfer must feed the same)."""

    block: StyleTokenBlock
    placeholder: str = "*"
    base_model: str = ""
    category: tuple[int, int] | None = None
    info: dict = field(default_factory=dict)
    reference_clip_input: bool = False

    def covers(self, count: int) -> bool:
        """Whether this token is meant for an image with ``count`` cells (always, without a category)."""
        return self.category is None or self.category[0] <= count <= self.category[1]


def new_token(dim: int, *, placeholder: str = "*", base_model: str = "", category: tuple[int, int] | None = None,
              seed: int = 0, reference_clip_input: bool = False) -> StyleToken:
    """A freshly initialised (untrained) token of width ``dim``; the init depends only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        block = StyleTokenBlock(TokenConfig(dim=dim)).eval()  # training switches it to train mode itself
    return StyleToken(block, placeholder, base_model, category, reference_clip_input=reference_clip_input)


def token_metadata(token: StyleToken) -> dict[str, str]:
    """The string metadata of a token's file (:mod:`instlib.data.tensorfile` adds format and checksum)."""
    return {"version": VERSION, "config": json.dumps(asdict(token.block.config)),
            "placeholder": token.placeholder, "base_model": token.base_model,
            "category": json.dumps(list(token.category) if token.category else None),
            "info": json.dumps(token.info, sort_keys=True),
            "reference_clip_input": json.dumps(token.reference_clip_input)}


def block_tensors(token: StyleToken) -> dict[str, torch.Tensor]:
    """The block's parameters as contiguous fp32 CPU tensors (the file's dtype whatever the run's)."""
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in token.block.state_dict().items()}


def save_token(token: StyleToken, path: str | Path) -> Path:
    """Write ``token`` to ``path`` (safetensors, atomically)."""
    return write_tensors(path, block_tensors(token), token_metadata(token), FORMAT)


def token_from_file(tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> StyleToken:
    """Rebuild a :class:`StyleToken` from its block tensors and a file's metadata; clear errors on a misfit."""
    try:
        config = TokenConfig(**json.loads(meta["config"]))
        category = json.loads(meta.get("category") or "null")
        token = StyleToken(StyleTokenBlock(config), meta.get("placeholder", "*"), meta.get("base_model", ""),
                           tuple(category) if category else None, json.loads(meta.get("info") or "{}"),
                           bool(json.loads(meta.get("reference_clip_input") or "false")))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"has unusable token metadata: {exc}", path) from exc
    expected = token.block.state_dict()
    if set(tensors) != set(expected):
        raise DataError(f"holds tensors {sorted(set(tensors) ^ set(expected))[:4]} that its block config "
                        f"{config} does not have (or lacks them)", path)
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise DataError(f"tensor '{key}' has shape {tuple(value.shape)} but the block config {config} "
                            f"needs {tuple(expected[key].shape)}", path)
    token.block.load_state_dict(tensors)
    return token


def load_token(path: str | Path, device: torch.device | str = "cpu") -> StyleToken:
    """Read a token file written by :func:`save_token` (block in fp32, in eval mode, on ``device``)."""
    tensors, meta = read_tensors(path, FORMAT, "token file")
    token = token_from_file(tensors, meta, Path(path))
    token.block.to(device).eval()
    return token


def load_tokens(path: str | Path, device: torch.device | str = "cpu") -> list[StyleToken]:
    """One token file, or every ``*.safetensors`` token in a folder (category tokens; checkpoints skipped)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.safetensors") if not p.name.endswith(".ckpt.safetensors"))
        if not files:
            raise DataError("holds no token files (*.safetensors)", path)
        return [load_token(f, device) for f in files]
    return [load_token(path, device)]
