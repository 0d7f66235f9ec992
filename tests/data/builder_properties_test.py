"""What the composites of a real COCO build must be: exact outside the mask, L* moved onto the
reference, a* and b* kept (the corruption is L* only), features that say what was achieved."""

import numpy as np
import pytest

from tfharm import colour
from tfharm.data import coco, composites

SPLITS = ("train", "validation", "test")


def _examples(builder, split):
  return list(builder.as_dataset(split=split).as_numpy_iterator())


@pytest.fixture(scope="module")
def coco_mini_examples(coco_mini_build):
  return {s: _examples(coco_mini_build, s) for s in SPLITS}


def _all(examples):
  return [ex for s in SPLITS for ex in examples[s]]


def test_coco_mini_split_sizes(coco_mini_build):
  """One composite per usable object (min area 1 %) whose references include one within the
  chroma and ratio bounds, four per held-back object (each from its own references; fewer when
  an object has fewer references); coco_mini's 80 train2017 photos give 15 validation photos,
  whose 32 objects gave 32 composites at one per object."""
  splits = coco_mini_build.info.splits
  assert {s: splits[s].num_examples for s in SPLITS} == {"train": 156, "validation": 95,
                                                          "test": 146}
  assert coco_mini_build.info.metadata["skipped"]["test"] == {
      "chroma_change": 38, "implausible_ratio": 8, "no_reference": 65}


def test_outside_mask_bit_identical_and_mask_binary(coco_mini_examples):
  for ex in _all(coco_mini_examples):
    mask = ex["mask"][..., 0]
    assert set(np.unique(mask)) <= {0, 255} and mask.any()
    outside = mask == 0
    np.testing.assert_array_equal(ex["composite"][outside], ex["real"][outside])


def _lab_inside(ex):
  inside = ex["mask"][..., 0] > 0
  return (colour.u8_to_lab(ex["composite"][inside]).astype(np.float64),
          colour.u8_to_lab(ex["real"][inside]).astype(np.float64))


def test_a_and_b_kept_inside_every_object(coco_mini_examples):
  """L* only: mean |da*| and |db*| inside every object at most 1.0 against the real image, and
  the recorded chroma_change is that measurement."""
  for ex in _all(coco_mini_examples):
    comp, real = _lab_inside(ex)
    change = np.abs(comp[:, 1:] - real[:, 1:]).mean(axis=0)
    assert change.max() <= 1.0, (ex["image_id"], ex["object_id"], change)
    assert ex["chroma_change"] == pytest.approx(change.max(), abs=1e-4)


def test_l_matches_the_intended_transfer_where_nothing_clips(coco_mini_examples):
  checked = 0
  for ex in _all(coco_mini_examples):
    comp, real = _lab_inside(ex)
    # The recorded target statistics are those of the real object.
    assert real[:, 0].mean() == pytest.approx(ex["target_l_mean"], abs=1e-3)
    assert real[:, 0].std() == pytest.approx(ex["target_l_std"], abs=1e-3)
    ratio = (comp[:, 0].mean() + composites.RATIO_EPSILON) / (real[:, 0].mean()
                                                             + composites.RATIO_EPSILON)
    assert ex["luminance_ratio"] == pytest.approx(ratio, rel=1e-5)
    if ex["l_clipped_fraction"] > 0:
      continue  # L* itself hit 0 or 100: the statistics cannot match
    checked += 1
    # Gamut mapping keeps L*, so only 8-bit rounding is left (it averages out).
    assert comp[:, 0].mean() == pytest.approx(ex["reference_l_mean"], abs=0.05)
    assert comp[:, 0].std() == pytest.approx(ex["reference_l_std"], abs=0.05)
  assert checked >= 100


def test_ratio_bound_holds_and_corruption_is_reinhard(coco_mini_examples):
  for ex in _all(coco_mini_examples):
    assert 1 / composites.PLAUSIBLE_RATIO <= ex["luminance_ratio"] <= composites.PLAUSIBLE_RATIO
    assert composites.CORRUPTIONS[ex["corruption"]] == "reinhard"


def test_reference_is_same_category_from_another_image(coco_mini_build):
  from tests.conftest import COCO_MINI
  splits = coco.load_dataset_splits([COCO_MINI], 0.2)
  # validation's references come from all of train2017 (they give only L* statistics)
  pools = {"train": splits["train"], "test": splits["test"],
           "validation": coco.merge_splits([splits["train"], splits["validation"]], "train2017")}
  for name in SPLITS:
    for ex in coco_mini_build.as_dataset(split=name).as_numpy_iterator():
      target = pools[name].objects[ex["object_id"]]
      reference = pools[name].objects[ex["reference_object_id"]]
      assert target.category_id == reference.category_id
      assert target.image_id == ex["image_id"] != ex["reference_image_id"] == reference.image_id
