"""Any COCO-format segmentation dataset is a root: categories from its own annotation file,
pairing by category name across roots, ids kept apart, and clear errors for bad annotations."""

import json
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tests.conftest import DEMO_ROOT, REPO
from tfharm.data import build, coco, composites, generator

LALONDE = os.path.join(os.path.dirname(REPO), "shared", "data", "lalonde_outdoor")
COCO_MINI = os.path.join(os.path.dirname(REPO), "shared", "data", "coco_mini")
_BASE = 800_000_000  # the synthetic root's ids: far from COCO's


def _synthetic_root(path, n_photos=8):
  """train2017 only, categories that are not COCO's ("sky", "rock") plus "chair" under id 5
  (COCO's "airplane"): the name, not the id, is what pairs."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(path, "train2017"))
  os.makedirs(os.path.join(path, "annotations"))
  images, annotations = [], []
  categories = [{"id": 1, "name": "sky"}, {"id": 2, "name": "Rock "}, {"id": 5, "name": "chair"}]
  for k in range(n_photos):
    h, w = 96, 128
    base = rng.uniform(40, 220, 3)
    photo = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    name = f"{_BASE + k}.png"
    cv2.imwrite(os.path.join(path, "train2017", name), photo)
    images.append({"id": _BASE + k, "file_name": name, "height": h, "width": w})
    for j, cat in enumerate((1, 2, 5)):
      m = np.zeros((h, w), np.uint8, order="F")
      m[10 + 20 * j:28 + 20 * j, 8 + 8 * k % 40:70 + 8 * k % 40] = 1
      rle = mask_utils.encode(m)
      rle["counts"] = rle["counts"].decode("ascii")
      annotations.append({"id": _BASE + 10 * k + j, "image_id": _BASE + k, "category_id": cat,
                          "iscrowd": 0, "area": float(m.sum()), "segmentation": rle,
                          "bbox": [0, 0, 1, 1]})
  with open(os.path.join(path, "annotations", "instances_train2017.json"), "w") as f:
    json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
  return path


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
  return _synthetic_root(str(tmp_path_factory.mktemp("synthetic") / "outdoor"))


def test_categories_come_from_the_roots_own_file(synthetic_root):
  split = coco.load_split(synthetic_root, "train")
  assert {o.category for o in split.objects.values()} == {"sky", "rock", "chair"}  # normalised
  assert coco.class_index("sky") == coco.class_index("rock") == len(coco.CATEGORY_NAMES)
  assert coco.CLASS_NAMES[coco.class_index("chair")] == "chair"


def test_pairing_is_by_name_across_roots(synthetic_root):
  source = generator.CompositeSource([DEMO_ROOT, synthetic_root], generator.GeneratorOptions())
  roots = {o.id: o.root for o in source.objects}
  for i, o in enumerate(source.objects):
    partners = [source.objects[j] for j in source.pools[i]]
    assert all(p.label == o.label and p.image_id != o.image_id for p in partners)
  chairs = [i for i, o in enumerate(source.objects) if o.label == "chair" and o.root == 1]
  assert chairs, "no eligible synthetic chair"
  partner_roots = {roots[source.objects[j].id] for i in chairs for j in source.pools[i]}
  assert partner_roots == {0, 1}  # a synthetic chair pairs with the demo's chairs too
  skies = [i for i, o in enumerate(source.objects) if o.label == "sky"]
  assert {roots[source.objects[j].id] for i in skies for j in source.pools[i]} == {1}


def test_build_with_a_non_coco_root(synthetic_root, tmp_path):
  builder = build.build([DEMO_ROOT, synthetic_root], str(tmp_path), "256", workers=1)
  names = builder.info.features["category"].names
  assert names[-1] == coco.OTHER and names[:-1] == list(coco.CATEGORY_NAMES)
  assert builder.info.metadata["roots"] == ["dummy_data", "outdoor"]
  seen = set()
  for split in ("train", "validation"):
    for ex in builder.as_dataset(split=split).as_numpy_iterator():
      synthetic = ex["image_id"] >= _BASE
      assert ex["root"] == int(synthetic)
      seen.add((bool(synthetic), names[ex["category"]]))
      if names[ex["category"]] == coco.OTHER:  # sky / rock pair only within the synthetic root
        assert ex["reference_image_id"] >= _BASE
  assert (True, coco.OTHER) in seen and (True, "chair") in seen


def test_ids_stay_distinct_across_roots(synthetic_root, tmp_path):
  clash = _synthetic_root(str(tmp_path / "copy"))  # the same ids again
  with pytest.raises(coco.AnnotationError, match="image ids .* occur in two roots"):
    generator.training_photos([synthetic_root, clash], 0.2)


def _damaged(tmp_path, damage):
  root = _synthetic_root(str(tmp_path / "bad"))
  path = os.path.join(root, "annotations", "instances_train2017.json")
  with open(path) as f:
    data = json.load(f)
  damage(data)
  with open(path, "w") as f:
    json.dump(data, f)
  return root, path


@pytest.mark.parametrize("damage,message", [
    (lambda d: d.update(categories=[]), "defines no categories"),
    (lambda d: d["annotations"][3].update(category_id=42), r"undefined category ids \[42\]"),
    (lambda d: d["annotations"][4]["segmentation"].update(size=[50, 60]),
     r"annotation 800000011: RLE mask size \[50, 60\] differs from its image 800000001.png"),
])
def test_bad_annotations_name_the_file_and_the_cause(tmp_path, damage, message):
  root, path = _damaged(tmp_path, damage)
  with pytest.raises(coco.AnnotationError, match=message) as e:
    coco.load_split(root, "train")
  assert path in str(e.value)


@pytest.mark.skipif(not os.path.isdir(LALONDE) or not os.path.isdir(COCO_MINI),
                    reason="needs ../shared/data/lalonde_outdoor and coco_mini")
def test_lalonde_outdoor_reads_and_pairs_with_coco():
  split = coco.merge_splits([coco.load_split(COCO_MINI, "train", 0),
                             coco.load_split(LALONDE, "train", 1)], "train2017")
  lalonde = {o.id for o in split.objects.values() if split.images[o.image_id].root == 1}
  assert len(lalonde) == 1673 and len({split.objects[i].image_id for i in lalonde}) == 1422
  cats = {split.objects[i].category for i in lalonde}
  assert {"sky", "tree", "building", "road", "car", "person"} <= cats
  options = composites.CompositeOptions()
  usable = [i for ids in composites.eligible_objects(split, options).values() for i in ids]
  specs, _, _ = composites.plan_composites(split.object_labels(), "train", usable, options)
  refs = {s.target_id: {r for r, _ in s.candidates} for s in specs}
  lalonde_cars = [t for t in refs if t in lalonde and split.objects[t].category == "car"]
  assert lalonde_cars and any(refs[t] - lalonde for t in lalonde_cars)  # COCO cars among them


def test_balanced_roots_give_each_root_the_same_share_of_targets(tmp_path):
  """A synthetic root with about three times the demo's objects: unbalanced, the demo gives
  about its share of the objects; balanced, half of the targets (the offset draws, and the
  reinhard draws among objects with a partner)."""
  big = _synthetic_root(str(tmp_path / "big"), n_photos=30)

  def shares(balance):
    source = generator.CompositeSource([DEMO_ROOT, big], generator.GeneratorOptions(
        balance_roots=balance, weights=(("offset", 1.0), ("reinhard", 1.0))))
    roots = np.array([int(source.example(i)["root"]) for i in range(200)])
    return np.mean(roots == 0), np.mean(np.array([o.root for o in source.objects]) == 0)

  unbalanced, demo_objects = shares(False)
  assert demo_objects < 0.35 and abs(unbalanced - demo_objects) < 0.1  # each object equally
  balanced, _ = shares(True)
  assert abs(balanced - 0.5) < 0.1
