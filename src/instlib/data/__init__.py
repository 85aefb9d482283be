"""The folder format and everything that reads or makes it.

- :mod:`~instlib.data.images`, :mod:`~instlib.data.points`: files in one array convention
- :mod:`~instlib.data.folder`: samples, manifests, ``instlib data check``, output folders
- :mod:`~instlib.data.maps`: dot maps, density maps, crops; :mod:`~instlib.data.splits`: k-fold
- :mod:`~instlib.data.synth`: Syn-HC; :mod:`~instlib.data.simulate`: the offline real-like simulator
- :mod:`~instlib.data.fetch`: IDCIA and Cell-200 downloads and imports
"""

from instlib.data.folder import Sample, check_folder, list_samples, read_manifest, write_manifest
from instlib.data.images import read_image, to_gray, to_rgb, to_uint8, write_image
from instlib.data.points import read_points, write_points

__all__ = [
    "Sample", "check_folder", "list_samples", "read_manifest", "write_manifest",
    "read_image", "to_gray", "to_rgb", "to_uint8", "write_image", "read_points", "write_points",
]
