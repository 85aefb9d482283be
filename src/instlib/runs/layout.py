"""Where a run keeps things: one folder per run, the same sub-folders for every profile.

::

    RUN/profile.yaml          the resolved profile the run used
    RUN/provenance.json       package versions, git commit, machine
    RUN/notebooks/NN_*.ipynb  the executed notebooks
    RUN/data/real             the real (or simulated real-like) images, folder format
    RUN/data/synhc            Syn-HC, one per real image, same names
    RUN/data/gradual          the gradual-count series
    RUN/data/inst             Syn-HC restyled by InST
    RUN/data/cell200          Cell200-s when the profile uses it
    RUN/style/                the diffusion prior (offline), style tokens, loss curves, strength sweep, ablations
    RUN/count/                counting runs: cross-validation, mixing ablations
    RUN/figures/              every figure the notebooks show, as PNG
    RUN/book/_build/html      the built book
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The paths of a run folder (nothing is created until a stage writes there)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # data
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def real(self) -> Path:
        return self.data / "real"

    @property
    def synhc(self) -> Path:
        return self.data / "synhc"

    @property
    def gradual(self) -> Path:
        return self.data / "gradual"

    @property
    def inst(self) -> Path:
        return self.data / "inst"

    @property
    def cell200(self) -> Path:
        return self.data / "cell200"

    # style
    @property
    def style(self) -> Path:
        return self.root / "style"

    @property
    def tokens(self) -> Path:
        return self.style / "tokens"

    @property
    def prior(self) -> Path:
        """The diffusion prior a run trains on its real images (``diffusion_model="prior"``)."""
        return self.style / "prior"

    @property
    def realism(self) -> Path:
        return self.style / "realism.csv"

    @property
    def models(self) -> Path:
        return self.style / "models"

    @property
    def sweep(self) -> Path:
        return self.style / "sweep"

    @property
    def ablation(self) -> Path:
        return self.style / "ablation"

    # counting
    @property
    def count(self) -> Path:
        return self.root / "count"

    @property
    def cv(self) -> Path:
        return self.count / "cv"

    @property
    def mixing(self) -> Path:
        return self.count / "mixing"

    # run records
    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def stamps(self) -> Path:
        return self.root / ".stamps"

    @property
    def book(self) -> Path:
        return self.root / "book"

    @property
    def index_html(self) -> Path:
        return self.book / "_build" / "html" / "index.html"

    @property
    def profile_yaml(self) -> Path:
        return self.root / "profile.yaml"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"

    def rel(self, path: str | Path) -> str:
        """``path`` as a reader of the book should see it: relative to the run folder when inside it
        (``data/real``), else with the home folder shortened to ``~`` (no machine's absolute paths)."""
        path = Path(path).expanduser().resolve()
        try:
            return path.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            pass
        try:
            return (Path("~") / path.relative_to(Path.home())).as_posix()
        except ValueError:
            return path.as_posix()

    def figure(self, name: str) -> Path:
        """``RUN/figures/<name>.png`` (the folder is created)."""
        self.figures.mkdir(parents=True, exist_ok=True)
        return self.figures / f"{name}.png"
