"""Keras 3 networks: the DIH harmoniser, the perceptual detector, the joint model, and the
functions they share (correction, full resolution). What runs end to end: tfharm.systems."""

from tfharm.models.detector import Detector, DetectorConfig, detect_any_size, load_detector
from tfharm.models.full_resolution import harmonise_any_size
from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig, harmonise, load_harmoniser
from tfharm.models.joint import JointConfig, JointModel, load_joint
from tfharm.models.presets import from_preset

__all__ = ["Detector", "DetectorConfig", "Harmoniser", "HarmoniserConfig", "JointConfig",
           "JointModel", "detect_any_size", "from_preset", "harmonise", "harmonise_any_size",
           "load_detector", "load_harmoniser", "load_joint"]
