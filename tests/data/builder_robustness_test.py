"""Bad input is skipped and counted or fails clean; builds are deterministic; Beam agrees."""

import glob
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfharm.data import luminance_composites as lcb
from tests.conftest import DEMO_ROOT, copy_demo_root
from tfharm.data import build, coco, composites

VERSION = str(lcb.LuminanceComposites.VERSION)


def _records(data_dir: str, config: str = "256") -> dict[str, list[bytes]]:
  out = {}
  for split in ("train", "validation", "test"):
    files = sorted(glob.glob(os.path.join(data_dir, "luminance_composites", config, VERSION,
                                          f"luminance_composites-{split}.tfrecord*")))
    out[split] = [r.numpy() for r in tf.data.TFRecordDataset(files)]
  return out


def _file_bytes(data_dir: str) -> dict[str, bytes]:
  files = glob.glob(os.path.join(data_dir, "luminance_composites", "256", VERSION, "*.tfrecord*"))
  return {os.path.basename(f): open(f, "rb").read() for f in sorted(files)}


def test_same_seed_and_config_give_byte_identical_tfrecords(demo_build, tmp_path):
  again = build.build(DEMO_ROOT, str(tmp_path), "256", workers=1)  # other worker count too
  first = _file_bytes(os.path.dirname(os.path.dirname(os.path.dirname(demo_build.data_dir))))
  assert first and first == _file_bytes(str(tmp_path))
  assert again.info.splits["test"].num_examples == demo_build.info.splits["test"].num_examples


def test_beam_direct_runner_writes_the_same_examples(demo_build, tmp_path):
  pytest.importorskip("apache_beam")
  build.build(DEMO_ROOT, str(tmp_path), "256", beam_pipeline_options="runner=DirectRunner")
  local = _records(os.path.dirname(os.path.dirname(os.path.dirname(demo_build.data_dir))))
  beam = _records(str(tmp_path))
  assert len(local["test"]) == demo_build.info.splits["test"].num_examples > 0
  for split in ("train", "validation", "test"):
    assert sorted(beam[split]) == sorted(local[split])


def _ids_and_images(record: bytes) -> tuple:
  """An example's identity (target image and object, reference object) and its images' bytes."""
  f = tf.train.Example.FromString(record).features.feature
  ids = tuple(f[k].int64_list.value[0] for k in ("image_id", "object_id", "reference_object_id"))
  return ids + tuple(f[k].bytes_list.value[0] for k in ("composite", "real", "mask"))


@pytest.mark.slow  # ~30 s: a Beam pipeline with two SDK worker processes
def test_beam_multi_processing_writes_the_same_examples(demo_build, tmp_path):
  """The command with Beam options, as on a cluster but with two local worker processes. Beam
  2.78's DirectRunner first tries its Prism runner (a downloaded binary); offline it falls
  back to the Python runner, which honours direct_running_mode (two `sdk_worker_main`
  processes here)."""
  pytest.importorskip("apache_beam")
  options = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  done = subprocess.run(
      [sys.executable, "-m", "tfharm.data.build", f"--manual_dir={DEMO_ROOT}",
       f"--data_dir={tmp_path}", "--dataset_config=256", f"--beam_pipeline_options={options}"],
      cwd=repo, capture_output=True, text=True, timeout=900, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  local = _records(os.path.dirname(os.path.dirname(os.path.dirname(demo_build.data_dir))))
  beam = _records(str(tmp_path))
  for split in ("train", "validation", "test"):
    assert local[split], split
    assert [_ids_and_images(r) for r in beam[split]] == [_ids_and_images(r) for r in local[split]]
    # Every feature, in the same order. Not the same bytes: protobuf serialises a feature map in
    # an order of its process (two local builds in two processes differ the same way).
    parse = tf.train.Example.FromString
    assert [parse(r) for r in beam[split]] == [parse(r) for r in local[split]]


def test_paper_style_plan_is_exact_deterministic_and_never_repeats_a_pair():
  split = coco.load_split(DEMO_ROOT, "test")
  labels = split.object_labels()
  usable = [o for ids in composites.eligible_objects(split, composites.CompositeOptions()).values()
            for o in ids]
  plan = lambda n: composites.plan_composites(labels, "test", usable,
                                              composites.CompositeOptions(), num_composites=n)
  specs, _, summary = plan(60)
  assert len(specs) == summary.planned == 60 and summary.shortfall == 0
  assert len({s.key for s in specs}) == 60 and specs == plan(60)[0]
  assert max(s.index for s in specs) >= 1  # targets were reused, with other references
  pairs = [(s.target_id, s.candidates[0][0]) for s in specs]
  assert len(set(pairs)) == len(pairs) and all(len(s.candidates) == 1 for s in specs)
  assert all(labels[s.target_id][1] == labels[r][1] for s in specs for r, _ in s.candidates)
  assert all(s.target_image_id != i for s in specs for _, i in s.candidates)


def test_a_plan_asking_for_more_than_the_distinct_pairs_makes_each_once_and_says_so():
  split = coco.load_split(DEMO_ROOT, "test")
  usable = [o for ids in composites.eligible_objects(split, composites.CompositeOptions()).values()
            for o in ids]
  specs, _, summary = composites.plan_composites(split.object_labels(), "test", usable,
                                                 composites.CompositeOptions(),
                                                 num_composites=100_000)
  pairs = {(s.target_id, s.candidates[0][0]) for s in specs}
  assert len(pairs) == len(specs) == summary.distinct_pairs == summary.planned < 100_000
  assert summary.shortfall == 100_000 - len(specs)


def _write_json(path, data):
  with open(path, "w") as f:
    json.dump(data, f)


@pytest.fixture(scope="module")
def damaged_build(tmp_path_factory):
  """The demo root with one of each kind of bad input, built once."""
  root = copy_demo_root(str(tmp_path_factory.mktemp("damaged") / "coco"))
  ann_path = os.path.join(root, "annotations", "instances_train2017.json")
  with open(ann_path) as f:
    train = json.load(f)
  # Damage training photos only: the demo's single validation photo must stay usable.
  images = [i for i in sorted(train["images"], key=lambda i: i["id"])
            if not coco.is_held_out(i["id"], composites.CompositeOptions().validation_fraction)]
  truncated, missing, resized = images[0], images[1], images[2]
  path = os.path.join(root, "train2017", truncated["file_name"])
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])
  os.remove(os.path.join(root, "train2017", missing["file_name"]))
  # The annotation says 7 rows more than the file has (its RLE sizes agree with the annotation,
  # else loading the annotations fails first): the decoded image is skipped as size_mismatch.
  record = next(i for i in train["images"] if i["id"] == resized["id"])
  record["height"] += 7
  for a in train["annotations"]:
    if a["image_id"] == resized["id"] and isinstance(a["segmentation"], dict):
      a["segmentation"]["size"] = [record["height"], record["width"]]
  _write_json(ann_path, train)

  val_path = os.path.join(root, "annotations", "instances_val2017.json")
  with open(val_path) as f:
    val = json.load(f)
  gray = sorted(val["images"], key=lambda i: i["id"])[0]
  gpath = os.path.join(root, "val2017", gray["file_name"])
  cv2.imwrite(gpath, cv2.imread(gpath, cv2.IMREAD_GRAYSCALE))
  host = sorted(val["images"], key=lambda i: i["id"])[1]
  area = 0.05 * host["height"] * host["width"]
  tiny = {"id": 990000001, "image_id": host["id"], "category_id": 1, "iscrowd": 0, "area": area,
          "bbox": [5, 5, 1, 1], "segmentation": [[5, 5, 5.4, 5, 5, 5.4]]}  # vanishes at 256
  lonely = {"id": 990000002, "image_id": host["id"], "category_id": 90, "iscrowd": 0,  # toothbrush
            "area": area, "bbox": [0, 0, 60, 60], "segmentation": [[0, 0, 60, 0, 60, 60, 0, 60]]}
  val["annotations"] += [tiny, lonely]
  _write_json(val_path, val)
  data_dir = str(tmp_path_factory.mktemp("damaged_tfds"))
  builder = build.build(root, data_dir, "256", workers=2)
  return builder, {"truncated": truncated["id"], "missing": missing["id"],
                   "resized": resized["id"], "gray": gray["id"]}


def test_bad_images_and_objects_are_counted_skips(damaged_build):
  builder, ids = damaged_build
  skipped = builder.info.metadata["skipped"]
  assert skipped["train"]["corrupt_image"] == 1
  assert skipped["train"]["missing_image"] == 1
  assert skipped["train"]["size_mismatch"] == 1
  assert skipped["train"]["object_in_skipped_image"] >= 3
  assert skipped["test"]["empty_mask"] == 1
  assert skipped["test"]["no_reference"] >= 1
  train_ids = {int(ex["image_id"]) for ex in builder.as_dataset(split="train").as_numpy_iterator()}
  assert not train_ids & {ids["truncated"], ids["missing"], ids["resized"]}
  test = list(builder.as_dataset(split="test").as_numpy_iterator())
  assert not {990000001, 990000002} & {int(ex["object_id"]) for ex in test}


def test_grayscale_image_is_used_with_equal_channels(damaged_build):
  builder, ids = damaged_build
  grays = [ex for ex in builder.as_dataset(split="test").as_numpy_iterator()
           if ex["image_id"] == ids["gray"]]
  assert grays, "the grayscale image made no composite"
  for ex in grays:
    real = ex["real"].astype(int)
    assert np.array_equal(real[..., 0], real[..., 1]) and np.array_equal(real[..., 1], real[..., 2])


def _no_records(data_dir):
  return not glob.glob(os.path.join(data_dir, "**", "*.tfrecord*"), recursive=True)


@pytest.mark.parametrize("damage,message", [
    (lambda p: os.remove(p), "annotation file not found"),
    (lambda p: open(p, "w").write("{not json"), "malformed annotation file"),
    (lambda p: open(p, "w").write('{"images": []}'), "missing or bad field"),
])
def test_bad_annotation_file_fails_before_writing(tmp_path, damage, message):
  root = copy_demo_root(str(tmp_path / "coco"))
  damage(os.path.join(root, "annotations", "instances_val2017.json"))
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(coco.AnnotationError, match=message):
    build.build(root, data_dir, "256", workers=1)
  assert _no_records(data_dir)


def test_unknown_config_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="unknown config '1024'"):
    build.build(DEMO_ROOT, str(tmp_path), "1024")


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
  calls = {"n": 0}
  real_fn = composites.image_composites

  def failing(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 3:
      raise KeyboardInterrupt("simulated interruption")
    return real_fn(*args, **kwargs)

  monkeypatch.setattr(composites, "image_composites", failing)
  with pytest.raises(KeyboardInterrupt):
    build.build(DEMO_ROOT, str(tmp_path), "256", workers=1)
  assert not lcb.LuminanceComposites(config="256", data_dir=str(tmp_path)).is_prepared()
  assert not glob.glob(os.path.join(str(tmp_path), "luminance_composites", "256", VERSION))
  # Nor anything partial: TFDS's incomplete.* folder, downloads/, .config/ are removed too.
  assert os.listdir(tmp_path) == []
