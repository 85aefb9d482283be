"""Does a prior's style token change its noise prediction? Token vs no token vs another image's token.

On random crops of the real images (at the prior's training size, the same noise and timesteps for
every condition), the prior predicts the noise under: the crop's own image's token (from another crop of
that image, as in training; the embedding L2-normalised as transfer makes it), the empty prompt
(guidance's unconditional branch) and a shuffled token (from a crop of another image). Prints the
noise-prediction MSE of each and the mean change of the prediction against the empty prompt. If the
token matters, the own token's MSE is lowest and the changes are a visible share of the MSE; where they
are not, guidance only repeats the same prediction (``TransferConfig.guidance=1`` skips it).

First it prints how far apart the image encoder puts two crops of one image, crops of two images of one
stain and crops of two stains (the real folder's ``manifest.csv`` column ``stain``, where it has one): a
token can only carry a style that its embedding tells apart.

    python benchmarks/token_effect.py PRIOR_FOLDER REAL_FOLDER [--crops 48]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from instlib.style import StyleComponents, load_components, load_token
from instlib.data.folder import read_manifest
from instlib.style.conditioning import encode_prompts, image_embeddings, token_embeddings
from instlib.style.imaging import list_images, load_rgb, to_pixels
from instlib.style.prior import TOKEN, _crop


def embedding_spread(comps: StyleComponents, images: list[np.ndarray], stains: list[str], size: int) -> None:
    """Print the mean cosine of two crops' embeddings: same image, same stain, other stain."""
    rng = np.random.default_rng(1)
    a, b = (image_embeddings(comps, [_crop(im, size, rng) for im in images]) for _ in range(2))
    cos = (a @ b.T).numpy()
    stain = np.array(stains)
    other = ~np.eye(len(images), dtype=bool)
    same_stain = (stain[:, None] == stain[None]) & other
    print(f"embedding cosine of two crops: same image {np.diag(cos).mean():.3f}, other image of the same stain "
          f"{cos[same_stain].mean():.3f}, other stain "
          f"{cos[stain[:, None] != stain[None]].mean() if len(set(stains)) > 1 else float('nan'):.3f}")


def main() -> None:
    """Parse arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior")
    parser.add_argument("real")
    parser.add_argument("--crops", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    comps = load_components(args.prior, device="cpu", dtype=torch.float32)  # the model, not its speed
    token = load_token(f"{args.prior}/{TOKEN}")
    size = int(comps.unet.config.sample_size)
    paths = list_images(args.real)
    images = [load_rgb(p) for p in paths.values()]
    manifest = read_manifest(args.real) if list(Path(args.real).glob("manifest*.csv")) else None
    stains = (manifest.set_index("name")["stain"].reindex(list(paths)).fillna("?").tolist()
              if manifest is not None and "stain" in manifest else ["?"] * len(images))
    embedding_spread(comps, images, stains, size)
    rng = np.random.default_rng(0)
    picks = rng.integers(len(images), size=args.crops)
    targets = [_crop(images[i], size, rng) for i in picks]
    own = [_crop(images[i], size, rng) for i in picks]
    shuffled = [_crop(images[(i + 1 + rng.integers(len(images) - 1)) % len(images)], size, rng) for i in picks]
    x = to_pixels(targets, "cpu", torch.float32)
    noise = randn_tensor(x.shape, generator=torch.Generator().manual_seed(0))
    n = args.crops
    with torch.no_grad():
        conds = {"own token": encode_prompts(comps, ["*"] * n, token_embeddings(comps, [token] * n, own)),
                 "shuffled token": encode_prompts(comps, ["*"] * n, token_embeddings(comps, [token] * n, shuffled)),
                 "no token": encode_prompts(comps, [""] * n)}
        print(f"{'t':>4s} {'condition':15s} {'eps-MSE':>9s} {'|eps - eps_no_token|':>21s}")
        for t in (100, 300, 500, 700, 900):
            steps = torch.full((n,), t)
            xt = comps.scheduler.add_noise(x, noise, steps)
            eps = {k: comps.unet(xt, steps, encoder_hidden_states=c).sample for k, c in conds.items()}
            for k, e in eps.items():
                print(f"{t:4d} {k:15s} {float(((e - noise) ** 2).mean()):9.5f} "
                      f"{float((e - eps['no token']).abs().mean()):21.5f}")


if __name__ == "__main__":
    main()
