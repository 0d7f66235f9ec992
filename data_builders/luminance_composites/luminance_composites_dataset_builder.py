"""luminance_composites: COCO objects whose L* was moved onto another same-category object's.

Build (local process pool):
  tfds build data_builders/luminance_composites --manual_dir=COCO_ROOT --data_dir=OUT [--config=512]
or, without the tfds command line: python -m tfharm.data.build --manual_dir=COCO_ROOT --data_dir=OUT
With Beam (any runner): add --beam_pipeline_options="runner=DirectRunner" (or Dataflow, Flink, ...).
"""

from __future__ import annotations

import dataclasses
import os  # only os.fspath: files are read through tfharm.data.coco

import numpy as np
import tensorflow_datasets as tfds

from tfharm.data import coco
from tfharm.data import composites
from tfharm.data import generation

_MANUAL = """\
manual_dir must be an MSCOCO 2017 root in the official layout:
  annotations/instances_train2017.json, annotations/instances_val2017.json, train2017/, val2017/
(https://cocodataset.org/#download: 2017 Train/Val images and 2017 Train/Val annotations).
"""


@dataclasses.dataclass
class LuminanceCompositesConfig(tfds.core.BuilderConfig):
  """Output size and count. `num_composites=None`: one composite per eligible target object."""
  image_size: int = 256
  num_composites: int | None = None
  min_area_fraction: float = 0.01
  seed: int = 0

  @property
  def options(self) -> composites.CompositeOptions:
    return composites.CompositeOptions(image_size=self.image_size,
                                       min_area_fraction=self.min_area_fraction, seed=self.seed,
                                       num_composites=self.num_composites)


class Builder(tfds.core.GeneratorBasedBuilder):
  """Luminance composites from MSCOCO 2017 (train2017 -> train, val2017 -> test)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL
  BUILDER_CONFIGS = [
      LuminanceCompositesConfig(name="256", description="One composite per eligible object, 256x256."),
      LuminanceCompositesConfig(name="512", image_size=512,
                                description="One composite per eligible object, 512x512 (Tsai et al.)."),
      LuminanceCompositesConfig(name="paper_256", num_composites=composites.PAPER_NUM_COMPOSITES,
                                description="68128 composites sampled with reuse, 256x256."),
      LuminanceCompositesConfig(name="paper_512", image_size=512,
                                num_composites=composites.PAPER_NUM_COMPOSITES,
                                description="68128 composites sampled with reuse, 512x512."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "256"

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    png = dict(encoding_format="png")
    scalar = lambda dtype: tfds.features.Scalar(dtype=dtype)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "composite": tfds.features.Image(shape=(s, s, 3), **png),
            "real": tfds.features.Image(shape=(s, s, 3), **png),
            "mask": tfds.features.Image(shape=(s, s, 1), **png),
            "category": tfds.features.ClassLabel(names=coco.CATEGORY_NAMES),
            "image_id": scalar(np.int64),
            "object_id": scalar(np.int64),
            "reference_image_id": scalar(np.int64),
            "reference_object_id": scalar(np.int64),
            "target_l_mean": scalar(np.float32),
            "target_l_std": scalar(np.float32),
            "reference_l_mean": scalar(np.float32),
            "reference_l_std": scalar(np.float32),
        }),
        supervised_keys=("composite", "real"),
        homepage="https://github.com/tfharm/tfharm",
        metadata=tfds.core.MetadataDict(),
    )

  def _download_and_prepare(self, dl_manager, download_config=None):
    # Beam only when asked for: plain builds use a local process pool, which is faster here.
    self._use_beam = bool(download_config and (download_config.beam_runner
                                               or download_config.beam_options))
    return super()._download_and_prepare(dl_manager, download_config)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = os.fspath(dl_manager.manual_dir)
    options = self.builder_config.options
    # Both annotation files are parsed before anything is written: a bad file fails the build clean.
    splits = {name: coco.load_split(root, name) for name in coco.SPLIT_DIRS}
    workers = generation.default_workers()
    # Paper configs divide their count by eligible objects, known before pass 1 on both paths,
    # so the local pool and Beam give the same split sizes.
    eligible = {n: sum(len(o) for o in composites.eligible_objects(s, options).values())
                for n, s in splits.items()}
    if getattr(self, "_use_beam", False):
      return {name: generation.beam_transform(split, name, options,
                                              generation.num_composites_for(name, options, eligible))
              for name, split in splits.items()}
    passes = {name: generation.compute_statistics(split, options, workers)
              for name, split in splits.items()}
    plans = {name: generation.plan_split(splits[name], name, *passes[name], options,
                                         generation.num_composites_for(name, options, eligible))
             for name in splits}
    self.info.metadata["skipped"] = {name: p.skip_counts() for name, p in plans.items()}
    self.info.metadata["options"] = dataclasses.asdict(options)
    return {name: self._generate_examples(plan, options, workers) for name, plan in plans.items()}

  def _generate_examples(self, plan, options, workers):
    yield from generation.generate_local(plan, options, workers)
