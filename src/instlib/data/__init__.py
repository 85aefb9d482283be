"""The folder format and everything that reads or makes it.

- :mod:`~instlib.data.images`, :mod:`~instlib.data.points`: files in one array convention
- :mod:`~instlib.data.folder`: samples, manifests, ``instlib data check``, output folders
- :mod:`~instlib.data.tables`: the one CSV reader (every cell text as written, numbers only where named)
- :mod:`~instlib.data.listing`: which files of a folder are data (hidden and OS files are not)
- :mod:`~instlib.data.atomic`: atomic writes, write failures as user errors, stale temporaries
- :mod:`~instlib.data.maps`: dot maps, density maps, crops; :mod:`~instlib.data.splits`: k-fold
- :mod:`~instlib.data.subsets`: official splits and stains shipped with a data set;
  :mod:`~instlib.data.selection`: which images a stage uses (stain, name glob, listed names)
- :mod:`~instlib.data.synth`: Syn-HC; :mod:`~instlib.data.simulate`: the offline real-like simulator
- :mod:`~instlib.data.fetch`: IDCIA and Cell-200 downloads and imports;
  :mod:`~instlib.data.checksums`: SHA-256 tables that pin what was imported (and MD5 tables, the downloads)
"""

from instlib.data.folder import Sample, check_folder, list_samples, read_manifest, write_manifest
from instlib.data.images import read_image, to_gray, to_rgb, to_uint8, write_image
from instlib.data.points import read_points, write_points
from instlib.data.selection import ImageFilter
from instlib.data.subsets import SPLIT, SPLITS, STAIN, split_names

__all__ = [
    "Sample", "check_folder", "list_samples", "read_manifest", "write_manifest",
    "read_image", "to_gray", "to_rgb", "to_uint8", "write_image", "read_points", "write_points",
    "ImageFilter", "SPLIT", "SPLITS", "STAIN", "split_names",
]
