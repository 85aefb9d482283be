"""Counting: training throughput of instlib's pipeline against one that mirrors the authors' code.

Both train the same model (EfficientNet-B0 at 200 x 200 by default) with Adam and MSE on the same
images, on the same machine, in alternating rounds (so a change in machine load hits both), and
report images/s through data pipeline + forward + backward + step.

- reference: a ``torch.utils.data.Dataset`` that per sample opens the TIFF and its dot image with
  PIL from disk, cuts a random crop, counts the cells of the crop by connected components of the
  dot image (redrawing most empty crops), applies torchvision's flips, 90-degree rotation and
  ``ColorJitter(0.2, 0.2, 0.2, 0.1)`` on PIL images, ``ToTensor`` and ``Normalize``; batch 8,
  default (NCHW) memory format, as in plain PyTorch code.
- instlib: images decoded once into memory, vectorised crop counts from the points, batched flips,
  rotations and colour jitter on tensors, channels-last input (instlib's default); batch 8.
- instlib density: the same pipeline with Gaussian density targets (sigma 4) training the density
  head (the same backbone as encoder, U-Net decoder to stride 2): the price of the dense head.

Then the density counter per architecture (``--architectures``: the timm encoder and the from-scratch
U-Nets of :mod:`instlib.count.encoders`), side by side in alternating rounds: training images/s (crops
of ``--crop``) and whole-image inference images/s on 600 x 800 images (:func:`~instlib.count.predict.density_maps`,
overlapping tiles blended), with the ratio to the first architecture.

On a GPU it also reports instlib's images/s with bf16 autocast and with channels-last.

Run:  python benchmarks/bench_count.py            (about a minute on 2 idle CPU cores; --threads 1 on a busy one)
      python benchmarks/bench_count.py --model test_efficientnet --crop 64 --rounds 2   (seconds)
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from scipy import ndimage

from instlib.count.augment import Jitter
from instlib.count.bank import load_bank
from instlib.count.batches import epoch_indices, make_batch
from instlib.count.bank import ImageBank
from instlib.count.model import CountModel
from instlib.count.predict import density_maps
from instlib.count.runtime import as_input, autocast
from instlib.count.spec import NORMS, ModelSpec
from instlib.data.folder import list_samples
from instlib.data.images import write_image
from instlib.data.maps import dot_map
from instlib.data.points import write_points
from instlib.data.simulate import colorize, render_fluorescence


def make_data(root: Path, n: int, shape: tuple[int, int], seed: int = 0) -> Path:
    """IDCIA-like folder: RGB fluorescence TIFFs with points, plus the dot images the reference reads."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        img, pts = render_fluorescence(int(rng.integers(7, 301)), shape, rng)
        write_image(root / "images" / f"img_{i:03d}.tiff", colorize(img, "dapi"))
        write_points(root / "points" / f"img_{i:03d}.csv", pts)
        write_image(root / "dots" / f"img_{i:03d}.png", (dot_map(pts, shape) > 0).astype(np.uint8) * 255)
    return root


class ReferenceDataset(torch.utils.data.Dataset):
    """Per sample: PIL decode from disk, crop, connected-component count, torchvision transforms."""

    def __init__(self, root: Path, size: int, zero_keep: float = 0.25, tries: int = 4):
        self.images = sorted((root / "images").iterdir())
        self.dots = [root / "dots" / f"{p.stem}.png" for p in self.images]
        self.size, self.zero_keep, self.tries = size, zero_keep, tries
        self.jitter = T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)
        mean, std = NORMS["idcia"]
        self.finish = T.Compose([T.ToTensor(), T.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = Image.open(self.images[i]).convert("RGB")
        dots = Image.open(self.dots[i]).convert("L")
        for attempt in range(self.tries):
            top, left, h, w = T.RandomCrop.get_params(image, (self.size, self.size))
            dot_crop = TF.crop(dots, top, left, h, w)
            count = ndimage.label(np.asarray(dot_crop) > 0)[1]
            if count > 0 or random.random() < self.zero_keep or attempt == self.tries - 1:
                break
        crop = TF.crop(image, top, left, h, w)
        if random.random() < 0.5:
            crop = TF.hflip(crop)
        if random.random() < 0.5:
            crop = TF.vflip(crop)
        crop = crop.rotate(90 * random.randint(0, 3))
        return self.finish(self.jitter(crop)), torch.tensor(float(count))


def reference_steps(model, loader_iter, opt, n_steps: int, device, channels_last: bool = False) -> int:
    images = 0
    for _ in range(n_steps):
        x, y = next(loader_iter)
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # The reference normalises in its transforms: bypass instlib's in-model normalisation.
        count = model.net.head(model.net.backbone(x).mean(dim=(2, 3))).squeeze(1)
        loss = torch.nn.functional.mse_loss(count, y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        images += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images


def instlib_steps(model, bank, opt, n_steps: int, batch: int, size: int, gen, device, channels_last: bool,
                  amp: bool) -> int:
    images = 0
    sigma = model.spec.sigma if model.spec.head == "density" else None  # as instlib.count.train chooses
    for idx in epoch_indices(len(bank), batch, gen, steps=n_steps):
        b = make_batch(bank, idx, size, gen, device=device, zero_keep=0.25, jitter=Jitter(), sigma=sigma)
        with autocast(device, amp):
            loss = model.loss(as_input(b.images, channels_last), b.maps)  # the step of instlib.count.train
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        images += len(idx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images


def _model(name: str, size: int, device, channels_last: bool, head: str = "regression"
           ) -> tuple[CountModel, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = CountModel(ModelSpec(backbone=name, crop_size=size, mean=NORMS["idcia"][0], std=NORMS["idcia"][1],
                                 head=head))
    model = model.to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-5)


def timed(fn) -> float:
    tic = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - tic)


def inference_images(model: CountModel, bank: ImageBank, device) -> int:
    """Whole-image density maps of every image of ``bank`` (the prediction path of ``count predict``)."""
    density_maps(model, bank, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(bank)


def density_architectures(names: list[str], bank: ImageBank, args, gen, device) -> None:
    """Training and 600 x 800 inference images/s of the density counter, per architecture, side by side."""
    whole = ImageBank(bank.names[:4], bank.paths[:4], [im[:, :600, :800] for im in bank.images[:4]], None, None)
    models = {n: _model(n, args.crop, device, channels_last=True, head="density") for n in names}
    for model, opt in models.values():  # warm-up
        instlib_steps(model, bank, opt, 2, args.batch, args.crop, gen, device, True, False)
        inference_images(model.eval(), whole, device)
    train = {n: [] for n in names}
    infer = {n: [] for n in names}
    for _ in range(args.rounds):
        for n, (model, opt) in models.items():
            model.train()
            train[n].append(timed(lambda: instlib_steps(model, bank, opt, args.steps, args.batch, args.crop, gen,
                                                        device, True, False)))
            infer[n].append(timed(lambda: inference_images(model.eval(), whole, device)))
    first = names[0]
    t0, i0 = statistics.median(train[first]), statistics.median(infer[first])
    print(f"\ndensity counter by architecture ({args.crop} px training crops, batch {args.batch}; "
          f"inference on whole 600 x 800 images)")
    for n in names:
        t, i = statistics.median(train[n]), statistics.median(infer[n])
        params = sum(p.numel() for p in models[n][0].parameters()) / 1e6
        print(f"  {n:16s} {params:5.1f} M params  train {t:7.1f} img/s ({t / t0:4.2f}x)   "
              f"600x800 inference {i:6.2f} img/s ({i / i0:4.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--crop", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=int, default=12, help="images of 768 x 1024 to generate")
    ap.add_argument("--steps", type=int, default=6, help="training steps per round and pipeline")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--architectures", default="efficientnet_b0,unet16,unet32",
                    help="density counters to compare, comma-separated (the first is the ratios' base)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    random.seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        root = make_data(Path(tmp), args.images, (768, 1024))
        made = time.perf_counter() - tic
        print(f"data: {args.images} RGB TIFFs of 768 x 1024 with 7-300 cells ({made:.0f} s to make)")

        tic = time.perf_counter()
        bank = load_bank(list_samples(root))
        decode_s = time.perf_counter() - tic
        dataset = ReferenceDataset(root, args.crop)
        sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**6)
        ref_iter = iter(torch.utils.data.DataLoader(dataset, batch_size=args.batch, sampler=sampler, num_workers=0))
        gen = torch.Generator().manual_seed(0)
        ref_model, ref_opt = _model(args.model, args.crop, device, channels_last=False)
        our_model, our_opt = _model(args.model, args.crop, device, channels_last=True)
        dens_model, dens_opt = _model(args.model, args.crop, device, channels_last=True, head="density")
        # Warm-up: allocator, kernel selection.
        reference_steps(ref_model, ref_iter, ref_opt, 2, device)
        instlib_steps(our_model, bank, our_opt, 2, args.batch, args.crop, gen, device, True, False)
        instlib_steps(dens_model, bank, dens_opt, 2, args.batch, args.crop, gen, device, True, False)

        ref, ours, dens = [], [], []
        for r in range(args.rounds):
            ref.append(timed(lambda: reference_steps(ref_model, ref_iter, ref_opt, args.steps, device)))
            ours.append(timed(lambda: instlib_steps(our_model, bank, our_opt, args.steps, args.batch, args.crop,
                                                    gen, device, True, False)))
            dens.append(timed(lambda: instlib_steps(dens_model, bank, dens_opt, args.steps, args.batch, args.crop,
                                                    gen, device, True, False)))
            print(f"round {r + 1}: reference {ref[-1]:.1f} img/s, instlib {ours[-1]:.1f} img/s, "
                  f"instlib density {dens[-1]:.1f} img/s")

        # Where the time goes: the data pipelines alone.
        data_ref = timed(lambda: sum(len(next(ref_iter)[0]) for _ in range(args.steps)))
        data_ours = timed(lambda: sum(len(make_batch(bank, idx, args.crop, gen, device=device, zero_keep=0.25).images)
                                      for idx in epoch_indices(len(bank), args.batch, gen, steps=args.steps)))

        r_med, o_med, d_med = statistics.median(ref), statistics.median(ours), statistics.median(dens)
        print(f"\n{args.model}, {args.crop} x {args.crop} crops, batch {args.batch}, {device}, "
              f"{torch.get_num_threads()} threads")
        print(f"training throughput  reference {r_med:7.1f} img/s   instlib {o_med:7.1f} img/s   "
              f"ratio {o_med / r_med:.2f}x")
        print(f"density head         regression {o_med:7.1f} img/s   density {d_med:7.1f} img/s   "
              f"ratio {d_med / o_med:.2f}x")
        print(f"data pipeline alone  reference {data_ref:7.1f} img/s   instlib {data_ours:7.1f} img/s   "
              f"ratio {data_ours / data_ref:.1f}x")
        print(f"instlib decodes the {args.images} images once up front: {decode_s:.2f} s")

        density_architectures(args.architectures.split(","), bank, args, gen, device)

        if device.type == "cuda":
            print("\nGPU variants of instlib's training step:")
            for cl in (False, True):
                for amp in (False, True):
                    m, o = _model(args.model, args.crop, device, channels_last=cl)
                    instlib_steps(m, bank, o, 3, args.batch, args.crop, gen, device, cl, amp)
                    ips = timed(lambda: instlib_steps(m, bank, o, 4 * args.steps, args.batch, args.crop, gen,
                                                      device, cl, amp))
                    layout = "channels_last" if cl else "NCHW"
                    print(f"  {layout:13s} {'bf16' if amp else 'fp32'}  {ips:8.1f} img/s")


if __name__ == "__main__":
    main()
