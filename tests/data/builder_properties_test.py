"""What the composites must be: exact outside the mask, chroma kept, L* statistics moved."""

import numpy as np
import pytest

from tfharm import colour


def _examples(builder, split):
  return list(builder.as_dataset(split=split).as_numpy_iterator())


@pytest.fixture(scope="module")
def coco_mini_examples(coco_mini_build):
  return {s: _examples(coco_mini_build, s) for s in ("train", "test")}


def test_coco_mini_split_sizes(coco_mini_build):
  splits = coco_mini_build.info.splits
  # One composite per usable object with a reference in another image (min area 1 %).
  assert splits["train"].num_examples == 248
  assert splits["test"].num_examples == 192
  assert coco_mini_build.info.metadata["skipped"] == {"train": {"no_reference": 35},
                                                      "test": {"no_reference": 65}}


def test_outside_mask_bit_identical_and_mask_binary(coco_mini_examples):
  for ex in coco_mini_examples["test"] + coco_mini_examples["train"]:
    mask = ex["mask"][..., 0]
    assert set(np.unique(mask)) <= {0, 255} and mask.any()
    outside = mask == 0
    np.testing.assert_array_equal(ex["composite"][outside], ex["real"][outside])


def test_chroma_unchanged_inside_mask_up_to_rounding(coco_mini_examples):
  worst = []
  for ex in coco_mini_examples["test"]:
    inside = ex["mask"][..., 0] > 0
    comp = ex["composite"][inside]
    # Gamut clipping legitimately changes a*, b*: judge only pixels the transfer kept in gamut.
    in_gamut = np.all((comp > 0) & (comp < 255), axis=-1)
    lab_c = colour.u8_to_lab(comp[in_gamut])
    lab_r = colour.u8_to_lab(ex["real"][inside][in_gamut])
    if len(lab_c):
      worst.append(np.abs(lab_c[:, 1:] - lab_r[:, 1:]).max())
  # One 8-bit step moves a*/b* by at most ~1.5 in the darkest colours; typical is far less.
  assert max(worst) < 2.5
  assert np.median(worst) < 1.0


def test_object_l_statistics_moved_onto_reference(coco_mini_examples):
  errors, clipped = [], 0
  for ex in coco_mini_examples["test"] + coco_mini_examples["train"]:
    inside = ex["mask"][..., 0] > 0
    real = colour.l_statistics(colour.u8_to_lab(ex["real"]), inside)
    # The recorded target statistics are those of the real object.
    assert real.mean == pytest.approx(ex["target_l_mean"], abs=1e-3)
    assert real.std == pytest.approx(ex["target_l_std"], abs=1e-3)
    comp = ex["composite"][inside]
    if np.mean(np.any((comp == 0) | (comp == 255), axis=-1)) > 1e-3:
      clipped += 1  # L* or the sRGB gamut was clipped: the statistics cannot match exactly
      continue
    moved = colour.l_statistics(colour.u8_to_lab(ex["composite"]), inside)
    errors.append((abs(moved.mean - ex["reference_l_mean"]), abs(moved.std - ex["reference_l_std"])))
  errors = np.asarray(errors)
  assert len(errors) >= 20, f"only {len(errors)} unclipped composites ({clipped} clipped)"
  # Within 8-bit rounding: one code value moves L* by at most ~0.3, and rounding averages out.
  assert errors.max() < 0.05, errors.max(axis=0)


def test_reference_is_same_category_from_another_image(coco_mini_build):
  from tfharm.data import coco
  from tests.conftest import COCO_MINI
  split = coco.load_split(COCO_MINI, "test")
  for ex in coco_mini_build.as_dataset(split="test").as_numpy_iterator():
    target, reference = split.objects[ex["object_id"]], split.objects[ex["reference_object_id"]]
    assert target.category_id == reference.category_id
    assert target.image_id == ex["image_id"] != ex["reference_image_id"] == reference.image_id
