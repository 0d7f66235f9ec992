"""TFDS's own builder test on the embedded sample (dummy_data/ serves as manual_dir), through
the registration `tfds build` uses."""

import tensorflow_datasets as tfds

from data_builders.luminance_composites import luminance_composites_dataset_builder


class LuminanceCompositesTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = luminance_composites_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["256"]
  SPLITS = {"train": 15, "validation": 2, "test": 23}  # validation: 2 references of its one object
  SKIP_CHECKSUMS = True

  def test_it_is_tfharms_builder_under_the_same_name(self):
    from tfharm.data import luminance_composites  # pylint: disable=g-import-not-at-top
    cls = luminance_composites_dataset_builder.Builder
    self.assertEqual(cls.name, luminance_composites.LuminanceComposites.name)
    self.assertTrue(issubclass(cls, luminance_composites.LuminanceComposites))
    own = [k for k, v in vars(cls).items() if callable(v) and not k.startswith("__")]
    self.assertEqual(own, [])  # a registration, no logic of its own


if __name__ == "__main__":
  tfds.testing.test_main()
