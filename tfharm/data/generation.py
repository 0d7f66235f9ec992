"""Runs the two composite passes: in a local process pool, or as an Apache Beam pipeline.

The local path is what `tfds build` and `python -m tfharm.data.build` use by default; the Beam
path is taken when the user passes Beam options (`--beam_pipeline_options=...`), so the same
builder scales to the full COCO train set on Dataflow, Flink or Spark. Both produce the same
examples under the same keys, and TFDS orders by key, so their TFRecords are identical.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
from typing import Iterator

from absl import logging
import cv2

from tfharm.data import coco
from tfharm.data import composites

_COUNTER_NAMESPACE = "luminance_composites"


@dataclasses.dataclass
class SplitPlan:
  """Pass 1 and planning done: what pass 2 will write, and what was skipped on the way."""
  split_name: str
  tasks: dict[int, composites.ImageTask]
  stats: dict[int, object]
  specs_by_image: dict[int, list[composites.CompositeSpec]]
  skips: list[tuple[str, str]]  # pass 2 (`generate_local`) appends the composites it rejects
  summary: composites.PlanSummary | None = None

  @property
  def num_examples(self) -> int:
    return sum(len(s) for s in self.specs_by_image.values())

  def skip_counts(self) -> dict[str, int]:
    return dict(sorted(collections.Counter(reason for reason, _ in self.skips).items()))

  def metadata(self) -> dict:
    """What the dataset's metadata.json records for this split."""
    out = {"skipped": self.skip_counts()}
    if self.summary is not None:
      out.update(requested=self.summary.requested, distinct_pairs=self.summary.distinct_pairs,
                 planned=self.summary.planned, shortfall=self.summary.shortfall)
    return out


def default_workers() -> int:
  """TFHARM_BUILD_WORKERS if set, else every core this process may run on."""
  return int(os.environ.get("TFHARM_BUILD_WORKERS", 0)) or max(1, len(os.sched_getaffinity(0)))


def _statistics(args):
  task, options = args
  return composites.object_statistics(task, options)


def _composites(args):
  task, specs, stats, options = args
  return composites.image_composites(task, specs, stats, options)


def _pool(num_workers: int):
  """A process pool whose workers are forked with OpenCV's thread pool switched off.

  fork, not spawn/forkserver: those re-import the caller's __main__ (the tfds CLI: TensorFlow,
  Beam) and measured 6x slower here. Workers touch no TensorFlow state, only numpy, OpenCV and
  pycocotools. OpenCV's own thread pool is the one fork hazard: a child that inherits it
  mid-use deadlocks on its mutex (seen in the test suite). So the parent drops OpenCV to one
  thread, which joins its pool threads, forks, then restores its setting; the children keep one
  thread, which is also right for one image per process. TFHARM_MP_START overrides the method.
  """
  previous = cv2.getNumThreads()
  cv2.setNumThreads(1)
  try:
    return multiprocessing.get_context(os.environ.get("TFHARM_MP_START", "fork")).Pool(num_workers)
  finally:
    cv2.setNumThreads(previous)


def _group(specs: list[composites.CompositeSpec]) -> dict[int, list[composites.CompositeSpec]]:
  by_image: dict[int, list[composites.CompositeSpec]] = collections.defaultdict(list)
  for spec in specs:
    by_image[spec.target_image_id].append(spec)
  return dict(sorted(by_image.items()))


def num_composites_for(split_name: str, options: composites.CompositeOptions,
                       eligible_per_split: dict[str, int]) -> int | None:
  """Splits `options.num_composites` over the splits in proportion to their eligible objects
  (train takes the rounding remainder)."""
  if options.num_composites is None:
    return None
  total = max(sum(eligible_per_split.values()), 1)
  share = {n: round(options.num_composites * e / total) for n, e in eligible_per_split.items()
           if n != "train"}
  return share.get(split_name, options.num_composites - sum(share.values()))


def compute_statistics(split: coco.CocoSplit, options: composites.CompositeOptions,
                       num_workers: int) -> tuple[dict[int, composites.ImageTask], dict, list]:
  """Pass 1 over every image with an eligible object, in a process pool."""
  tasks = {t.image.id: t for t in composites.image_tasks(split, options)}
  stats, skips = {}, []
  work = [(t, options) for t in tasks.values()]
  if num_workers > 1 and len(work) > 1:
    with _pool(num_workers) as pool:
      results = list(pool.imap(_statistics, work, chunksize=4))
  else:
    results = [_statistics(w) for w in work]
  for r in results:
    stats.update(r.stats)
    skips.extend(r.skips)
  return tasks, stats, skips


# Splits whose references may also come from another split's objects (see plan_composites).
REFERENCE_SPLITS = {"validation": "train"}


def plan_split(split: coco.CocoSplit, split_name: str, tasks, stats, skips,
               options: composites.CompositeOptions, num_composites: int | None,
               references: tuple[coco.CocoSplit, dict] | None = None) -> SplitPlan:
  """Plans one split from its pass-1 statistics; `references`: (split, its statistics) whose
  objects may also serve as references (REFERENCE_SPLITS)."""
  labels, extra_stats = split.object_labels(), {}
  if references is not None:
    labels = {**references[0].object_labels(), **labels}
    extra_stats = references[1]
  specs, no_reference, summary = composites.plan_composites(
      labels, split_name, stats, options, num_composites, extra_references=extra_stats)
  plan = SplitPlan(split_name, tasks, {**extra_stats, **stats}, _group(specs),
                   skips + no_reference, summary)
  counts = plan.skip_counts()
  logging.info("%s: %d composites planned from %d images; skipped: %s", split_name,
               plan.num_examples, len(plan.specs_by_image), counts or "nothing")
  if summary.shortfall:
    logging.warning("%s: %d composites asked for, but the split has only %d distinct (target, "
                    "reference) pairs: each is made once, none is repeated (shortfall %d)",
                    split_name, summary.requested, summary.distinct_pairs, summary.shortfall)
  for reason, detail in plan.skips[:20]:
    logging.warning("skipped (%s) %s", reason, detail)
  if len(plan.skips) > 20:
    logging.warning("... and %d more skips", len(plan.skips) - 20)
  return plan


def generate_local(plan: SplitPlan, options: composites.CompositeOptions,
                   num_workers: int) -> Iterator[tuple[str, dict]]:
  """Pass 2 in a process pool, yielding (key, example) in a fixed order; the composites it
  rejects (chroma or ratio bound) are appended to plan.skips and logged."""
  work = [(plan.tasks[image_id], specs, _stats_for(specs, plan.stats), options)
          for image_id, specs in plan.specs_by_image.items()]
  pool = _pool(num_workers) if num_workers > 1 and len(work) > 1 else None
  try:
    stream = pool.imap(_composites, work, chunksize=1) if pool else map(_composites, work)
    rejected = 0
    for examples, skips in stream:
      for reason, detail in skips:
        if rejected < 20:
          logging.warning("skipped (%s) %s", reason, detail)
        rejected += 1
      plan.skips.extend(skips)
      yield from examples
    if rejected:
      logging.info("%s: %d composites rejected by the chroma/ratio bounds", plan.split_name,
                   rejected)
  finally:
    if pool:
      pool.terminate()


def _stats_for(specs, stats) -> dict:
  ids = {s.target_id for s in specs} | {r for s in specs for r, _ in s.candidates}
  return {i: stats[i] for i in ids}


def beam_transform(split: coco.CocoSplit, split_name: str, options: composites.CompositeOptions,
                   num_composites: int | None, references: coco.CocoSplit | None = None):
  """The same two passes as a Beam PTransform (PBegin -> (key, example)).

  `references`: another split whose objects may serve as references (REFERENCE_SPLITS); its
  statistics are computed here too (only counted, never written). Skips are reported as Beam
  counters under the namespace `luminance_composites`.
  """
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  tasks = composites.image_tasks(split, options)
  reference_tasks = composites.image_tasks(references, options) if references else []
  labels = {**(references.object_labels() if references else {}), **split.object_labels()}
  own = set(split.objects)

  def statistics(task, count_skips):
    result = composites.object_statistics(task, options)
    for reason, detail in result.skips if count_skips else ():
      beam.metrics.Metrics.counter(_COUNTER_NAMESPACE, reason).inc()
      logging.warning("skipped (%s) %s", reason, detail)
    yield from result.stats.items()

  def plan(_, stats):
    specs, skips, _ = composites.plan_composites(
        labels, split_name, [i for i in stats if i in own], options, num_composites,
        extra_references=[i for i in stats if i not in own])
    for reason, detail in skips:
      beam.metrics.Metrics.counter(_COUNTER_NAMESPACE, reason).inc()
      logging.warning("skipped (%s) %s", reason, detail)
    for spec in specs:
      yield spec.target_image_id, spec

  def write(item, stats):
    _, grouped = item
    (task,), specs = grouped["task"], sorted(grouped["specs"], key=lambda s: s.key)
    if specs:
      examples, skips = composites.image_composites(task, specs, stats, options)
      for reason, detail in skips:
        beam.metrics.Metrics.counter(_COUNTER_NAMESPACE, reason).inc()
        logging.warning("skipped (%s) %s", reason, detail)
      yield from examples

  @beam.ptransform_fn
  def build(pipeline):
    stats = ((pipeline | "tasks_for_stats" >> beam.Create([(t, True) for t in tasks] +
                                                          [(t, False) for t in reference_tasks]))
             | "statistics" >> beam.FlatMapTuple(statistics))
    stats_dict = beam.pvalue.AsDict(stats)
    specs = (pipeline | "seed" >> beam.Create([None])
             | "plan" >> beam.FlatMap(plan, stats=stats_dict)
             | "spread" >> beam.Reshuffle())
    keyed_tasks = pipeline | "tasks" >> beam.Create([(t.image.id, t) for t in tasks])
    return ({"task": keyed_tasks, "specs": specs} | "join" >> beam.CoGroupByKey()
            | "composites" >> beam.FlatMap(write, stats=stats_dict))

  return build()  # pylint: disable=no-value-for-parameter
