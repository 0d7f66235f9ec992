"""The online generator: the built dataset's element spec, deterministic and resumable by
position, each corruption what it says, the validation photos never drawn, bad options refused."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import DEMO_ROOT
from tfharm import colour
from tfharm.data import coco, composites, generator, pipeline


@pytest.fixture(scope="module")
def source():
  return generator.CompositeSource([DEMO_ROOT], generator.GeneratorOptions(seed=3))


def test_batches_have_make_datasets_element_spec(source, demo_build):
  data_dir = demo_build.data_dir.split("/luminance_composites/")[0]
  built = pipeline.make_dataset(data_dir, "train", batch_size=4).element_spec
  online = source.dataset(0, batch_size=4, augment=True).element_spec
  assert set(online) == set(built)
  for key, spec in built.items():
    assert online[key].dtype == spec.dtype, key
    assert online[key].shape[1:] == spec.shape[1:], key
  batch = next(iter(source.dataset(0, batch_size=4)))
  assert set(np.unique(batch["mask"].numpy())) <= {0.0, 1.0}
  assert 0.0 <= float(tf.reduce_min(batch["composite"])) <= float(tf.reduce_max(batch["composite"])) <= 1.0


def test_stream_is_deterministic_and_resumes_at_any_position(source):
  whole = [b for _, b in zip(range(3), source.dataset(0, batch_size=4, seed=5))]
  resumed = next(iter(source.dataset(8, batch_size=4, seed=5)))  # a run that consumed 8
  for key in ("composite", "real", "mask", "object_id", "corruption"):
    np.testing.assert_array_equal(resumed[key].numpy(), whole[2][key].numpy(), err_msg=key)
  other = next(iter(generator.CompositeSource(
      [DEMO_ROOT], generator.GeneratorOptions(seed=4)).dataset(0, batch_size=4, seed=5)))
  assert not np.array_equal(other["composite"].numpy(), whole[0]["composite"].numpy())



def test_shards_split_the_stream_between_workers_and_resume(source):
  """Worker k of n draws examples start+k, start+k+n, ...: disjoint, together the stream."""
  whole = next(iter(source.dataset(4, batch_size=4, seed=5)))  # examples 4..7
  for k in range(2):
    part = next(iter(source.dataset(4, batch_size=2, seed=5, shard=(k, 2))))  # 4+k, 6+k
    for key in ("composite", "mask", "object_id"):
      np.testing.assert_array_equal(part[key].numpy(), whole[key].numpy()[k::2], err_msg=key)
  with pytest.raises(ValueError, match="shard"):
    source.dataset(0, shard=(2, 2))


def test_the_stream_makes_each_example_once(source, monkeypatch):
  """tf.data takes 17 features per example from one numpy call: example() runs once per index
  (it ran once per feature, 17 times the stream's whole cost)."""
  calls = []
  make = source.example
  monkeypatch.setattr(source, "example", lambda i: (calls.append(i), make(i))[1])
  next(iter(source.dataset(0, batch_size=2, augment=False)))
  assert {0, 1} <= set(calls) and len(calls) == len(set(calls)), calls


def _lab_inside(ex):
  inside = ex["mask"][..., 0] > 0
  return (colour.u8_to_lab(ex["composite"][inside]).astype(np.float64),
          colour.u8_to_lab(ex["real"][inside]).astype(np.float64))


def test_each_corruption_is_what_it_says(source):
  seen = set()
  for i in range(120):
    ex = source.example(i)
    kind = composites.CORRUPTIONS[ex["corruption"]]
    seen.add(kind)
    outside = ex["mask"][..., 0] == 0
    np.testing.assert_array_equal(ex["composite"][outside], ex["real"][outside])
    comp, real = _lab_inside(ex)
    ratio = (comp[:, 0].mean() + 1e-3) / (real[:, 0].mean() + 1e-3)
    assert ex["luminance_ratio"] == pytest.approx(ratio, rel=1e-5)
    assert np.abs(comp[:, 1:] - real[:, 1:]).mean(axis=0).max() <= 1.0  # L* only
    assert 1 / composites.PLAUSIBLE_RATIO <= ratio <= composites.PLAUSIBLE_RATIO
    if kind == "identity":
      np.testing.assert_array_equal(ex["composite"], ex["real"])
      assert ex["reference_object_id"] == ex["object_id"]
    elif kind == "offset":
      assert ex["reference_object_id"] == -1
      if ex["l_clipped_fraction"] == 0:  # L* scaled by one factor: its mean and std alike
        assert comp[:, 0].mean() == pytest.approx(ex["reference_l_mean"], abs=0.1)
        assert comp[:, 0].std() == pytest.approx(ex["reference_l_std"], abs=0.1)
    else:
      assert ex["reference_image_id"] != ex["image_id"]
      assert source.objects[[o.id for o in source.objects].index(ex["reference_object_id"])
                            ].label == source.objects[[o.id for o in source.objects].index(
                                ex["object_id"])].label  # paired by name
      assert ex["category"] == coco.class_index(source.objects[
          [o.id for o in source.objects].index(ex["object_id"])].label)
  assert seen == set(composites.CORRUPTIONS)


def test_offsets_cover_both_sides_of_the_thresholds(source):
  opts = source.options
  ratios = []
  for i in range(300):
    ex = source.example(i)
    if composites.CORRUPTIONS[ex["corruption"]] == "offset":
      ratios.append(ex["reference_l_mean"] / ex["target_l_mean"])  # the intended factor
  ratios = np.asarray(ratios)
  for low, high in ((0, opts.tau_neg), (opts.tau_neg, opts.tau_pos), (opts.tau_pos, np.inf)):
    share = np.mean((ratios >= low) & (ratios < high))
    assert 0.2 < share < 0.47, (low, high, share)


def test_weights_choose_the_corruptions():
  only = generator.CompositeSource([DEMO_ROOT], generator.GeneratorOptions(
      weights=(("identity", 1.0), ("reinhard", 0.0))))
  assert {int(only.example(i)["corruption"]) for i in range(20)} == {2}


def test_validation_photos_are_never_drawn(source):
  held = {i for i in coco.load_split(DEMO_ROOT, "train").images if coco.is_held_out(i, 0.2)}
  assert held and not held & source.image_ids
  assert not held & {int(source.example(i)["image_id"]) for i in range(60)}


@pytest.mark.parametrize("options,message", [
    (dict(weights=(("reinhard", 0.0), ("identity", 0.0))), "sum to more than 0"),
    (dict(weights=(("blur", 1.0),)), "unknown corruptions"),
    (dict(weights=(("reinhard", -1.0), ("identity", 2.0))), ">= 0"),
    (dict(validation_fraction=0.0), "validation_fraction"),
    (dict(categories=("giraffe",)), "name no object of the training photos"),
])
def test_bad_options_are_clear_errors(options, message):
  with pytest.raises(ValueError, match=message):
    generator.CompositeSource([DEMO_ROOT], generator.GeneratorOptions(**options))


def test_a_category_with_objects_in_one_photo_cannot_be_reinhard(source):
  counts = {}
  for o in source.objects:
    counts.setdefault(o.label, set()).add(o.image_id)
  lonely = next(c for c, photos in counts.items() if len(photos) == 1)
  with pytest.raises(ValueError, match=f"{lonely}.*fewer than two training photos"):
    generator.CompositeSource([DEMO_ROOT], generator.GeneratorOptions(categories=(lonely,)))
  # without the reinhard corruption the same category is fine
  generator.CompositeSource([DEMO_ROOT], generator.GeneratorOptions(
      categories=(lonely,), weights=(("offset", 1.0), ("identity", 1.0))))


def test_parse_weights():
  assert generator.parse_weights("reinhard=0.5, identity=1") == (("reinhard", 0.5),
                                                                  ("identity", 1.0))
  with pytest.raises(ValueError, match="name=value"):
    generator.parse_weights("reinhard")
