"""instlib: InST style transfer for fluorescence microscopy and the cell-counting experiments around it.

Subpackages, one stage each:

- ``instlib.data``  folder format (images + points CSVs + manifest), Syn-HC, simulator, fetchers
- ``instlib.style`` InST style token training and stochastic-inversion transfer on diffusers
- ``instlib.count`` EfficientNet-B0 counting, cross-validation, CutMix / DACS
- ``instlib.runs``  profiles and the papermill driver behind ``instlib reproduce``
"""

__version__ = "0.1.0"
