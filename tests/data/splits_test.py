"""Splits that share nothing (train / validation from train2017 by photo, test from val2017) and
builds from several COCO roots."""

import json
import os
import shutil

import numpy as np
import pytest

from tests.conftest import DEMO_ROOT
from tfharm.data import build, coco, composites

SPLITS = ("train", "validation", "test")
_OFFSET = 10**9  # ids of the synthetic second root: COCO ids are far below


def _image_ids(builder, split):
  return {int(ex["image_id"]) for ex in builder.as_dataset(split=split).as_numpy_iterator()}


def test_train_validation_and_test_share_no_photo(demo_build):
  ids = {s: _image_ids(demo_build, s) for s in SPLITS}
  assert all(ids.values()), {s: len(v) for s, v in ids.items()}
  assert not ids["train"] & ids["validation"]
  assert not ids["train"] & ids["test"] and not ids["validation"] & ids["test"]
  fraction = demo_build.builder_config.validation_fraction
  assert all(coco.is_held_out(i, fraction) for i in ids["validation"])
  assert not any(coco.is_held_out(i, fraction) for i in ids["train"])


def test_held_out_photos_are_a_stable_hashed_fraction():
  ids = np.arange(1, 20001)
  held = {f: {int(i) for i in ids if coco.is_held_out(int(i), f)} for f in (0.1, 0.2)}
  assert len(held[0.2]) / len(ids) == pytest.approx(0.2, abs=0.01)
  assert held[0.1] < held[0.2]  # a larger fraction only adds photos
  assert held[0.2] == {int(i) for i in ids if coco.is_held_out(int(i), 0.2)}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_validation_fraction_must_leave_both_splits_nonempty(fraction):
  with pytest.raises(ValueError, match="validation_fraction"):
    coco.load_dataset_splits([DEMO_ROOT], fraction)


def _train_only_root(dst: str, id_offset: int = _OFFSET) -> str:
  """A second root holding the demo's train2017 photos under new ids, and no val2017 (like
  coco128)."""
  os.makedirs(os.path.join(dst, "annotations"))
  shutil.copytree(os.path.join(DEMO_ROOT, "train2017"), os.path.join(dst, "train2017"))
  with open(os.path.join(DEMO_ROOT, "annotations", "instances_train2017.json")) as f:
    data = json.load(f)
  for image in data["images"]:
    image["id"] += id_offset
  for ann in data["annotations"]:
    ann["id"] += id_offset
    ann["image_id"] += id_offset
  with open(os.path.join(dst, "annotations", "instances_train2017.json"), "w") as f:
    json.dump(data, f)
  return dst


def test_two_roots_merge_and_a_root_may_lack_val2017(tmp_path, demo_build):
  second = _train_only_root(str(tmp_path / "second"))
  merged = build.build([DEMO_ROOT, second], str(tmp_path / "tfds"), "256", workers=2)
  train = _image_ids(merged, "train") | _image_ids(merged, "validation")
  assert any(i >= _OFFSET for i in train) and any(i < _OFFSET for i in train)
  # val2017 comes from the demo root alone, so test is the single-root build's
  assert _image_ids(merged, "test") == _image_ids(demo_build, "test")
  assert merged.info.splits["test"].num_examples == demo_build.info.splits["test"].num_examples
  assert merged.info.metadata["roots"] == ["dummy_data", "second"]
  ids = {s: _image_ids(merged, s) for s in SPLITS}
  assert not ids["train"] & ids["validation"] and not (ids["train"] | ids["validation"]) & ids["test"]


def test_roots_that_share_an_image_id_are_refused(tmp_path):
  twin = _train_only_root(str(tmp_path / "twin"), id_offset=0)  # the demo's own ids again
  with pytest.raises(coco.AnnotationError, match="occur in two roots"):
    coco.load_dataset_splits([DEMO_ROOT, twin], 0.2)


def test_a_split_that_no_root_provides_is_a_clear_error(tmp_path):
  only_train = _train_only_root(str(tmp_path / "only_train"))
  with pytest.raises(coco.AnnotationError, match="none of the roots .* has val2017"):
    coco.load_dataset_splits([only_train], 0.2)


def test_a_folder_of_roots_is_read_as_several_roots(tmp_path):
  os.symlink(os.path.abspath(DEMO_ROOT), tmp_path / "a_demo")
  _train_only_root(str(tmp_path / "b_second"))
  roots = coco.coco_roots(str(tmp_path))
  assert [os.path.basename(r) for r in roots] == ["a_demo", "b_second"]
  with pytest.raises(coco.AnnotationError, match="not a COCO 2017 root"):
    coco.coco_roots(str(tmp_path / "b_second" / "train2017"))


def test_metadata_records_planned_pairs_and_shortfall(demo_build):
  splits = demo_build.info.metadata["splits"]
  for name in SPLITS:
    assert splits[name]["shortfall"] == 0 and splits[name]["requested"] is None
    assert splits[name]["planned"] >= demo_build.info.splits[name].num_examples
  assert composites.PlanSummary(100, 40, 40).shortfall == 60


def test_paper_config_emits_every_distinct_pair_once_and_records_the_shortfall(tmp_path):
  """The demo has far fewer distinct (target, reference) pairs than 68128: all are made once."""
  builder = build.build(DEMO_ROOT, str(tmp_path), "paper_256", workers=2)
  meta = builder.info.metadata["splits"]
  for name in SPLITS:
    pairs = [(int(ex["object_id"]), int(ex["reference_object_id"]))
             for ex in builder.as_dataset(split=name).as_numpy_iterator()]
    assert len(pairs) == len(set(pairs)) == builder.info.splits[name].num_examples > 0
    assert meta[name]["planned"] == meta[name]["distinct_pairs"] < meta[name]["requested"]
    assert meta[name]["shortfall"] == meta[name]["requested"] - meta[name]["planned"]
  assert sum(m["requested"] for m in meta.values()) == composites.PAPER_NUM_COMPOSITES
