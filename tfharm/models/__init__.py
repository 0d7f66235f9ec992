"""Keras 3 models: the DIH harmoniser (and, later, the detector and the end-to-end graph)."""

from tfharm.models.full_resolution import harmonise_any_size
from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig, harmonise, load_harmoniser

__all__ = ["Harmoniser", "HarmoniserConfig", "harmonise", "harmonise_any_size", "load_harmoniser"]
