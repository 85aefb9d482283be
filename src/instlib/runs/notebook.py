"""What every notebook does first, and the small glue between a profile and the library calls.

A notebook's setup cell is ``P, run = setup_from(globals())``: the profile with the notebook's
parameters applied (``None`` = the profile's value), and the run folder layout. A notebook run on its
own first runs the notebooks before it that have not finished in its run folder
(:func:`instlib.runs.reproduce.run_earlier`); on Colab the run folder defaults to Google Drive, mounted
first, so that a disconnected VM loses nothing (:func:`default_run_dir`). Paths a page prints
go through ``run.rel(path)`` (relative to the run folder), so the book shows no machine's paths.
:func:`banner` shows the warnings a reader must see (random diffusion weights, simulated data);
:func:`describe` says in one line which profile, data and models produced a number or figure.
"""

from __future__ import annotations

import html
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from instlib.data.atomic import atomic_path
from instlib.errors import DataError, InstlibError
from instlib.runs.layout import RunLayout
from instlib.runs.profiles import PRIOR, SETTINGS, Profile, declared_only, get_profile, resolve_models
from instlib.runs.reproduce import run_earlier


#: Where Colab mounts Google Drive, and the folder in it that holds the runs (they outlive the VM).
COLAB_DRIVE = Path("/content/drive")
COLAB_RUNS = Path("MyDrive") / "inst-microscopy" / "runs"


def on_colab() -> bool:
    """Whether this kernel runs on Google Colab."""
    return "google.colab" in sys.modules


def default_run_dir(profile: str) -> Path:
    """``runs/PROFILE``; on Colab the same on Google Drive, where a disconnect or a new VM loses nothing."""
    return COLAB_DRIVE / COLAB_RUNS / profile if on_colab() else Path("runs") / profile


def mount_drive() -> None:
    """Mount Google Drive at :data:`COLAB_DRIVE` unless it is mounted (Colab asks the user for access once)."""
    if (COLAB_DRIVE / "MyDrive").is_dir():
        return
    from google.colab import drive

    drive.mount(str(COLAB_DRIVE))


def setup(profile: str = "demo", run_dir: str | Path | None = None, *, notebook_name: str | None = None,
          **parameters: Any) -> tuple[Profile, RunLayout]:
    """Resolve the profile (``None`` parameters keep the profile's value) and the run folder.

    The profile returned lets the notebook read only the ``parameters`` it declared (see
    :func:`~instlib.runs.profiles.declared_only`): a setting it did not declare would never receive the
    run's value. ``notebook_name`` (the notebook's file stem): first run the notebooks before it that have not
    finished in the run folder, with this profile (:func:`~instlib.runs.reproduce.run_earlier`).
    """
    full = resolve_models(get_profile(profile, **parameters))
    prof = declared_only(full, set(parameters))
    root = Path(run_dir) if run_dir else default_run_dir(prof.name)
    if on_colab() and root.resolve().is_relative_to(COLAB_DRIVE.resolve()):
        mount_drive()
    layout = RunLayout(root)
    layout.root.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib as mpl
        import seaborn as sns

        sns.set_theme(context="notebook", style="whitegrid")
        mpl.rcParams.update({"figure.dpi": 90, "savefig.dpi": 110, "savefig.bbox": "tight",
                             "image.interpolation": "nearest"})
    except ImportError:  # pragma: no cover
        pass
    if notebook_name:
        run_earlier(full, layout.root, notebook_name)
    return prof, layout


def setup_from(namespace: Mapping[str, Any]) -> tuple[Profile, RunLayout]:
    """:func:`setup` with the parameters a notebook defined: ``profile``, ``run_dir``, ``notebook_name`` and every
    profile field found in ``namespace`` (the notebook's ``globals()`` after its parameters cell),
    so the setup cell does not repeat the parameter names."""
    fields = {name: namespace[name] for name in Profile.model_fields if name in namespace and name in SETTINGS}
    return setup(namespace.get("profile", "demo"), namespace.get("run_dir"),
                 notebook_name=namespace.get("notebook_name"), **fields)


# ---------------------------------------------------------------- what produced the numbers


def data_label(profile: Profile) -> str:
    data = profile.data
    if data.real == "simulate":
        return (f"simulated fluorescence images (instlib simulator, {data.n_real} images of "
                f"{data.image_size} px, {data.cells[0]}-{data.cells[1]} cells)")
    if data.real == "idcia":
        return "IDCIA" + (f" (at most {data.n_real} images)" if data.n_real else "")
    return (f"the folder {data.real}" + _split_note(Path(data.real).expanduser())
            + (f" (at most {data.n_real} images)" if data.n_real else ""))


def _split_note(folder: Path) -> str:
    """Says the folder's official split, when it ships one."""
    from instlib.data.fetch import shipped_split

    try:
        counts = Counter(shipped_split(folder).values())
    except InstlibError:
        return ""
    if not counts:
        return ""
    return f" (ships an official split: {counts['train']} train / {counts['val']} val / {counts['test']} test)"


def diffusion_label(profile: Profile) -> str:
    m = profile.diffusion_model
    if m == PRIOR:
        return (f"a diffusion prior trained in this run on its real images ({profile.prior.steps} steps on "
                f"{profile.prior.resolution} px crops; pixel space), not Stable Diffusion v1.4")
    if m == "tiny":
        return "a tiny diffusion model with random weights"
    if m == "sd14-random":
        return "the Stable Diffusion v1.4 architecture with random weights"
    enc = f" with image encoder {profile.image_encoder}" if profile.image_encoder else ""
    return f"{m}{enc}"


def counter_label(profile: Profile) -> str:
    init = "ImageNet weights" if profile.count.pretrained else "random initialisation"
    return f"{profile.count.model} ({init})"


def describe(profile: Profile, *parts: str) -> str:
    """One line: ``profile X; data: ...; diffusion: ...; counting: ...`` (``parts`` choose which)."""
    parts = parts or ("data", "diffusion", "counting")
    out = [f"profile **{profile.name}**"]
    if "data" in parts:
        out.append(f"data: {data_label(profile)}")
    if "diffusion" in parts:
        out.append(f"diffusion: {diffusion_label(profile)}")
    if "counting" in parts:
        out.append(f"counting: {counter_label(profile)}, seeds {', '.join(map(str, profile.cv.seeds))}")
    return "; ".join(out) + "."


class Admonition:
    """A warning box that renders in Jupyter, on Colab and in the book (HTML with Sphinx's classes)."""

    def __init__(self, title: str, paragraphs: list[str], kind: str = "warning"):
        self.title, self.paragraphs, self.kind = title, paragraphs, kind

    def _repr_html_(self) -> str:
        body = "".join(f"<p>{html.escape(p)}</p>" for p in self.paragraphs)
        return (f'<div class="admonition {self.kind}"><p class="admonition-title">{html.escape(self.title)}</p>'
                f"{body}</div>")

    def _repr_markdown_(self) -> str:  # plain fallback (e.g. text front ends)
        return f"**{self.title}**\n\n" + "\n\n".join(self.paragraphs)

    def __repr__(self) -> str:
        return f"{self.title}: " + " ".join(self.paragraphs)


def banner(profile: Profile, *, about: tuple[str, ...] = ("diffusion", "data")) -> Admonition | None:
    """The warnings this run's readers must see, or None when there is nothing to warn about."""
    notes = []
    if "diffusion" in about and profile.random_diffusion:
        notes.append(f"The diffusion model of this run ({profile.diffusion_model}) has random weights, so the "
                     "'InST' images below only show that the pipeline runs end to end: they have no scientific "
                     "value, and neither do the counting results that use them.")
    if "diffusion" in about and profile.diffusion_model == PRIOR:
        notes.append("The diffusion model of this run is not Stable Diffusion v1.4 (not in the local cache): it is a "
                     f"small diffusion prior trained in notebook 2 on this run's real images, without their labels "
                     f"({profile.prior.steps} steps on {profile.prior.resolution} px crops). InST runs on it "
                     "unchanged; its images show the method on a model of this data, not the paper's model.")
    if "data" in about and profile.simulated_data:
        notes.append("The 'real' images of this run come from the offline simulator (instlib.data.simulate), "
                     "not from IDCIA: the numbers measure the pipeline on simulated data, not the paper's claims.")
    if not notes:
        return None
    return Admonition(f"Profile {profile.name}: read with care", notes)


def header(profile: Profile, *parts: str, about: tuple[str, ...] = ("diffusion", "data")) -> None:
    """Display the banner (when there is something to warn about) and the one-line description."""
    from IPython.display import Markdown, display

    box = banner(profile, about=about)
    if box is not None:
        display(box)
    display(Markdown("This page: " + describe(profile, *parts)))


def diffusion_model(profile: Profile, layout: RunLayout) -> str:
    """The model for :func:`instlib.style.load_components`: the run's trained prior folder for
    ``diffusion_model="prior"``, else the profile's model.

    The prior is fully convolutional: trained on ``prior.resolution`` crops, it runs on the tiles of
    ``tokens.resolution`` and ``transfer.resolution`` (a whole demo image in one tile).
    """
    if profile.diffusion_model == PRIOR and not (layout.prior / "prior.json").is_file():
        raise InstlibError("has no trained diffusion prior yet: run notebook 02_style_token first with the "
                           "same run_dir", layout.root)
    return str(layout.prior) if profile.diffusion_model == PRIOR else profile.diffusion_model


# ---------------------------------------------------------------- data glue


REAL_POINTER = "real_dir.txt"


def prepare_real(profile: Profile, layout: RunLayout, *, overwrite: bool = False) -> Path:
    """The run's real images in the folder format: simulated, IDCIA, or the user's folder.

    With ``n_real > 0`` and more images than that, a subset spread evenly over the cell counts is
    copied into ``RUN/data/real``; a user's folder is otherwise used where it is (a data set as
    shipped, such as IDCIA's layout, is first converted into ``RUN/data/imported``). The chosen folder
    is recorded in ``RUN/data/real_dir.txt`` for the later notebooks (:func:`real_folder`).
    """
    path = Path(_prepare_real(profile, layout, overwrite=overwrite)).resolve()
    layout.data.mkdir(parents=True, exist_ok=True)
    (layout.data / REAL_POINTER).write_text(f"{path}\n{profile.data.real}\n")
    return path


def real_folder(profile: Profile, layout: RunLayout) -> Path:
    """The real folder notebook 01 prepared for this run (raises if it has not run)."""
    pointer = layout.data / REAL_POINTER
    try:
        path, source = pointer.read_text().splitlines()[:2]
    except (OSError, ValueError):
        raise InstlibError("has no real data yet: run notebook 01_synthesize first with the same run_dir",
                           layout.root) from None
    if source != profile.data.real:
        raise InstlibError(f"holds real data from '{source}', but this notebook's profile says "
                           f"data.real='{profile.data.real}': run notebook 01_synthesize again", layout.root)
    return Path(path)


def _prepare_real(profile: Profile, layout: RunLayout, *, overwrite: bool = False) -> Path:
    from instlib.data.folder import POINTS, list_samples

    data = profile.data
    if data.real == "simulate":
        from instlib.data.simulate import simulate

        return simulate(layout.real, data.n_real, (data.image_size, data.image_size), data.cells,
                        seed=data.seed, color=data.color, overwrite=overwrite, progress=False)
    if data.real == "idcia":
        full = layout.data / "idcia"
        try:
            list_samples(full)
        except InstlibError:
            from instlib.data.fetch import fetch

            # While instlib's MD5 table is not filled in, figshare's own MD5s check the download (the
            # note printed says so and where the table of what was fetched is); a filled table rules.
            fetch("idcia", full, overwrite=overwrite, trust_listing=True)
        source = full
    else:
        source = Path(data.real).expanduser()
        if source.is_dir() and not (source / POINTS).is_dir():  # a data set as shipped, e.g. IDCIA's layout
            from instlib.data.fetch import import_folder

            source = import_folder(source, layout.data / "imported", source="user", overwrite=overwrite,
                                   progress=False)
        list_samples(source)  # raises a clear error for a missing or malformed folder
    if not data.n_real or len(list_samples(source)) <= data.n_real:
        return source
    return subset(source, layout.real, data.n_real, overwrite=overwrite)


def subset(src: str | Path, dest: str | Path, n: int, *, names: Iterable[str] | None = None,
           overwrite: bool = False) -> Path:
    """Copy ``n`` samples of ``src`` spread evenly over their sorted cell counts into ``dest``
    (with ``names``: ``n`` of those samples only)."""
    from instlib.data.fetch import shipped_split
    from instlib.data.folder import IMAGES, POINTS, list_samples, prepare_output, write_manifest
    from instlib.data.subsets import SPLIT, STAIN, stains_of

    samples = list_samples(src)
    params = {"src": str(Path(src).resolve()), "n": n}
    if names is not None:
        allowed = set(names)
        samples = [s for s in samples if s.name in allowed]
        params["names"] = sorted(allowed)
    pick = _spread_by_count(samples, n)
    dest = prepare_output(dest, "subset", params, overwrite)
    split = shipped_split(src)  # the official split and the stains travel with the images they cover
    try:
        stains = stains_of(src)
    except DataError:  # a folder without a stain column
        stains = {}
    rows = []
    for s in pick:
        for src_file, folder in ((s.image, IMAGES), (s.points, POINTS)):
            with atomic_path(dest / folder / src_file.name) as tmp:
                shutil.copyfile(src_file, tmp)
        rows.append({"name": s.name, "count": s.count(), "source": "subset", "seed": "", "original": str(s.image),
                     **({SPLIT: split.get(s.name, "")} if split else {}),
                     **({STAIN: stains.get(s.name, "")} if stains else {})})
    write_manifest(dest, rows)
    return dest


def pick_names(folder: str | Path, k: int) -> list[str]:
    """``k`` sample names spread over the folder's cell counts (low to high), for galleries."""
    from instlib.data.folder import list_samples

    return [s.name for s in _spread_by_count(list_samples(folder), k)]


def _spread_by_count(samples: list, k: int) -> list:
    """At most ``k`` of ``samples``, evenly spaced over their sorted cell counts (low to high)."""
    samples = sorted(samples, key=lambda s: (s.count(), s.name))
    if not samples or k < 1:
        return []
    return [samples[i] for i in np.unique(np.linspace(0, len(samples) - 1, min(k, len(samples))).round().astype(int))]


