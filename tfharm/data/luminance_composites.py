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
(https://cocodataset.org/#download: 2017 Train/Val images and 2017 Train/Val annotations),
or a folder whose subfolders are such roots (merged; a root may lack val2017 or train2017).
Any segmentation dataset in that layout is a root: categories come from its own annotation file
and objects pair by category name across roots (docs/data.md).
"""


@dataclasses.dataclass
class LuminanceCompositesConfig(tfds.core.BuilderConfig):
  """Output size and count. `num_composites=None`: one composite per eligible target object."""
  image_size: int = 256
  num_composites: int | None = None
  min_area_fraction: float = 0.01
  seed: int = 0
  validation_fraction: float = 0.2
  max_chroma_change: float = 1.0
  max_luminance_ratio: float | None = None
  validation_references: int = 1

  @property
  def options(self) -> composites.CompositeOptions:
    return composites.CompositeOptions(
        image_size=self.image_size, min_area_fraction=self.min_area_fraction, seed=self.seed,
        num_composites=self.num_composites, validation_fraction=self.validation_fraction,
        validation_references=self.validation_references,
        max_chroma_change=self.max_chroma_change, max_luminance_ratio=self.max_luminance_ratio)


# Validation composites per held-back object (each from its own references): ~1,500 composites
# from coco_mini + coco128 + lalonde_outdoor, where one per object gave too few to tell two
# checkpoints 0.1 dB apart.
VALIDATION_REFERENCES = 4


class LuminanceComposites(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Luminance composites from MSCOCO 2017 (train2017 -> train + validation, val2017 -> test)."""

  name = "luminance_composites"
  # README.md (TFDS's description) and CITATIONS.bib, read by TFDS from this folder; package
  # data, so a build from an installed tfharm carries them as a `tfds build` does.
  pkg_dir_path = tfds.core.Path(__file__).parent / "luminance_composites_metadata"

  VERSION = tfds.core.Version("3.0.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "2.0.0": "validation split (photos held out of train2017); no (target, reference) pair "
               "twice; out-of-gamut colours lose chroma at constant L* and hue instead of "
               "per-channel clipping, and composites whose a*/b* still move are not made; "
               "features corruption, l_clipped_fraction, luminance_ratio, chroma_change; "
               "several COCO roots.",
      "3.0.0": "any COCO-format root: categories from each root's annotation file, pairing by "
               "category name across roots, `category` ClassLabel = COCO's 80 + 'other'; "
               "feature `root` (index into metadata['roots']); the `256`/`512` configs make 4 "
               "validation composites per held-back object, each from its own references.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL
  BUILDER_CONFIGS = [
      LuminanceCompositesConfig(name="256", max_luminance_ratio=composites.PLAUSIBLE_RATIO,
                                validation_references=VALIDATION_REFERENCES,
                                description="One composite per eligible object (4 per held-back "
                                            "validation object), 256x256."),
      LuminanceCompositesConfig(name="512", image_size=512,
                                max_luminance_ratio=composites.PLAUSIBLE_RATIO,
                                validation_references=VALIDATION_REFERENCES,
                                description="One composite per eligible object (4 per held-back "
                                            "validation object), 512x512 (Tsai et al.)."),
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
            "category": tfds.features.ClassLabel(names=coco.CLASS_NAMES),
            "root": scalar(np.int64),
            "image_id": scalar(np.int64),
            "object_id": scalar(np.int64),
            "reference_image_id": scalar(np.int64),
            "reference_object_id": scalar(np.int64),
            "target_l_mean": scalar(np.float32),
            "target_l_std": scalar(np.float32),
            "reference_l_mean": scalar(np.float32),
            "reference_l_std": scalar(np.float32),
            "corruption": tfds.features.ClassLabel(names=composites.CORRUPTIONS),
            "l_clipped_fraction": scalar(np.float32),
            "luminance_ratio": scalar(np.float32),
            "chroma_change": scalar(np.float32),
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
    roots = coco.coco_roots(os.fspath(dl_manager.manual_dir))
    options = self.builder_config.options
    # Every annotation file is parsed before anything is written: a bad file fails the build clean.
    splits = coco.load_dataset_splits(roots, options.validation_fraction)
    workers = generation.default_workers()
    # Paper configs divide their count by eligible objects, known before pass 1 on both paths,
    # so the local pool and Beam give the same split sizes.
    eligible = {n: sum(len(o) for o in composites.eligible_objects(s, options).values())
                for n, s in splits.items()}
    count = lambda name: generation.num_composites_for(name, options, eligible)
    reference_split = lambda name: generation.REFERENCE_SPLITS.get(name)
    if getattr(self, "_use_beam", False):
      return {name: generation.beam_transform(
                  split, name, options, count(name),
                  splits[reference_split(name)] if reference_split(name) else None)
              for name, split in splits.items()}
    passes = {name: generation.compute_statistics(split, options, workers)
              for name, split in splits.items()}
    plans = {name: generation.plan_split(
                 splits[name], name, *passes[name], options, count(name),
                 (splits[reference_split(name)], passes[reference_split(name)][1])
                 if reference_split(name) else None)
             for name in splits}
    self.info.metadata["options"] = dataclasses.asdict(options)
    self.info.metadata["roots"] = [os.path.basename(os.path.realpath(r)) for r in roots]
    self._plans = plans
    self._record_plans()
    return {name: self._generate_examples(plan, options, workers) for name, plan in plans.items()}

  def _record_plans(self):
    plans = self._plans
    self.info.metadata["skipped"] = {name: p.skip_counts() for name, p in plans.items()}
    self.info.metadata["splits"] = {name: p.metadata() for name, p in plans.items()}

  def _generate_examples(self, plan, options, workers):
    yield from generation.generate_local(plan, options, workers)
    self._record_plans()  # pass 2's rejections join the counts once the split is written
