"""TFDS's own builder test on the embedded sample (dummy_data/ serves as manual_dir)."""

import tensorflow_datasets as tfds

from data_builders.luminance_composites import luminance_composites_dataset_builder


class LuminanceCompositesTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = luminance_composites_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["256"]
  SPLITS = {"train": 15, "validation": 2, "test": 23}  # validation: 2 references of its one object
  SKIP_CHECKSUMS = True


if __name__ == "__main__":
  tfds.testing.test_main()
