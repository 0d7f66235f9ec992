"""Keras 3 models: the DIH harmoniser, the perceptual detector, and the end-to-end graph."""

from tfharm.models.detector import Detector, DetectorConfig, detect_any_size, load_detector
from tfharm.models.full_resolution import harmonise_any_size
from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig, harmonise, load_harmoniser
from tfharm.models.pipeline import HarmonisationPipeline, load_pipeline, make_inference_fn
from tfharm.models.presets import from_preset

__all__ = ["Detector", "DetectorConfig", "HarmonisationPipeline", "Harmoniser",
           "HarmoniserConfig", "detect_any_size", "from_preset", "harmonise", "harmonise_any_size",
           "load_detector", "load_harmoniser", "load_pipeline", "make_inference_fn"]
