"""One `Task` per model family, each with its config dataclass:

- harmoniser: `HarmoniserTask(HarmoniserTaskConfig)`, DIH's reconstruction loss;
- detector: `DetectorTask(DetectorTaskConfig)`, per-pixel classes from the L* ratio;
- detector_aet: `DetectorAETTask(DetectorAETTaskConfig)`, the detector's AET pre-training.
"""
