"""The `luminance_composites` dataset for the tfds command line:

  tfds build data_builders/luminance_composites --manual_dir=COCO_ROOT --data_dir=OUT [--config=512]

TFDS takes the builder from a class defined in this file, so this is a subclass of
tfharm.data.luminance_composites.LuminanceComposites (the builder itself, its configs and its
description) with nothing of its own: this file registers the name, dummy_data/ is the TFDS
test's manual_dir, tfharm never imports this folder.
"""

from tfharm.data import luminance_composites


class Builder(luminance_composites.LuminanceComposites):
  """Registered as `luminance_composites` (its name comes from this module's)."""
