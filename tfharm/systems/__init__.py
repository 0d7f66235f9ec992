"""The systems that run end to end, by name: the one place that knows which kinds exist.

  system = tfharm.systems.load("joint")                 # the default: preset joint_256
  system = tfharm.systems.load("pipeline", {"detector_weights": "run/detector.keras"})
  system.any_size(photo01)["harmonised"]                # tfharm.systems.base.System

`SYSTEMS` holds, per name, a `Spec`: its module (which defines `load(files, correction,
image_size)` returning a tfharm.systems.base.System), its weight files (a command's flag ->
the preset kind that is its default) and the rows it adds to an evaluation (which scores any
subset of the systems: tfharm.evaluation reads the rows, detection and labels of the ones it
scored from here). Every consumer
(harmonise, export, the web page, the evaluation) loops over or looks up this table rather
than branching on a name, so a new served model is a network, its training task, a preset, a
module here and its entry below. No TensorFlow at import: the commands check their flags and
files with this before they pay for it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import re
from typing import Any, Iterator, Mapping
import warnings

from tfharm import presets
from tfharm.cli import program


@dataclasses.dataclass(frozen=True)
class Spec:
  module: str  # defines load(files, correction, image_size) -> System
  weights: Mapping[str, str]  # weight flag (without "--") -> preset kind (default: its preset)
  description: str
  rows: tuple[str, ...]  # its evaluation rows, in table order (after the composite's)
  photo_rows: tuple[str, ...]  # of those, the mask-free ones also scored on unedited photos
  detector: str  # the name its detection is scored under ("<detector>/iou", ...)
  labels: Mapping[str, str] = dataclasses.field(default_factory=dict)  # row -> table label
  # (its row through its own mask, the same through the ground-truth mask): what the
  # evaluation's examples and differential figure compare when it is the first system scored
  # (the pipeline's C_p and C_s, the paper's Fig. 5). () : none.
  compared: tuple[str, ...] = ()
  # The page's words for it (tfharm/app/handling.py, `words`): its name there, what finds the
  # region (and draws the map), and what changes the photo through the mask.
  title: str = "the model"
  finder: str = "the model"
  fixer: str = "the model"


SYSTEMS: dict[str, Spec] = {
    "pipeline": Spec(
        "tfharm.systems.pipeline",
        {"detector_weights": "detector", "harmoniser_weights": "harmoniser"},
        "the paper's detector + harmoniser (docs/architecture.md)",
        # The paper's rows first (Table 1), then the ablations, then the corrected variants.
        rows=("harmoniser_gt_mask", "detector_harmoniser",
              "harmoniser_binarised_pred_mask", "harmoniser_empty_mask",
              "harmoniser_gt_mask_gated", "detector_harmoniser_gated",
              "harmoniser_gt_mask_l_moments", "detector_harmoniser_l_moments",
              "detector_harmoniser_abstain_l_moments", "ring_l_mean_gt_mask"),
        photo_rows=("detector_harmoniser_l_moments", "detector_harmoniser_abstain_l_moments"),
        detector="detector", compared=("detector_harmoniser", "harmoniser_gt_mask"),
        title="detector + harmoniser (the paper's two networks)",
        finder="the detector", fixer="the harmoniser"),
    "joint": Spec(
        "tfharm.systems.joint", {"joint_weights": "joint"},
        "the joint model, one network that finds and fixes (docs/joint.md)",
        # Its own output at S, what `--model=joint` returns (corrected through m), and its L*
        # change through the ground-truth mask (the reference its mask-free rows are
        # measured against, as C_p against C_s).
        rows=("joint", "joint_l_moments", "joint_gt_mask"),
        photo_rows=("joint", "joint_l_moments"), detector="joint_detector",
        compared=("joint", "joint_gt_mask"),
        labels={"joint": "joint model, its own output (mask-free)",
                "joint_l_moments": "joint model, L* moments (--model=joint)",
                "joint_gt_mask": "joint model, GT mask (its L* change)"},
        title="joint model (one network finds and fixes)", finder="the joint model",
        fixer="the joint model"),
}
# What harmonise, export and the page run without --model: the joint model won on validation
# (tfharm/presets/README.md, "The default").
DEFAULT = "joint"
NAMES = tuple(SYSTEMS)


def spec(name: str) -> Spec:
  try:
    return SYSTEMS[name]
  except KeyError:
    raise ValueError(f"unknown model {name!r}; one of {', '.join(SYSTEMS)}") from None


def owner(weight_flag: str) -> str | None:
  """The system whose weights `weight_flag` (e.g. "joint_weights") names."""
  return next((n for n, s in SYSTEMS.items() if weight_flag in s.weights), None)


def weight_files(name: str, given: Mapping[str, str | None] | None = None) -> dict[str, str]:
  """{weight flag: file} that system `name` runs, from `given` (flag -> path or preset name;
  None or absent: the default preset). ValueError for an unknown system or for weights given
  to a system that will not run (the user would silently get the other system's output);
  FileNotFoundError (presets.weight_files) naming every missing file."""
  wanted = spec(name)
  others = {}
  for flag, value in (given or {}).items():
    if value and flag not in wanted.weights:
      others.setdefault(owner(flag), []).append(f"--{flag}")
  for other, flags in others.items():
    listed = " and ".join(flags)
    raise ValueError(f"{listed} apply to --model={other}, but --model={name} runs"
                     f"{' (the default)' if name == DEFAULT else ''}; add --model={other} or "
                     f"drop {listed}")
  return presets.weight_files(given or {}, wanted.weights)


class WeightsFileError(program.SetupError, ValueError):
  """A weights file that exists but cannot be loaded into its network (another model's file,
  another configuration's, a damaged or foreign file): one line naming the flag and the file."""


def _why(error: Exception, what: str) -> str:
  """Keras's reason in a few words: its own message is up to 150 lines (every variable), and
  for a .keras file that is not a zip archive it says "File not found"."""
  text = str(error).strip()
  count = re.search(r"A total of (\d+) objects could not be loaded", text)
  if count or re.search(r"shape of the target variable|expected \d+ variables|does not match",
                        text):
    layers = f": {count.group(1)} layers could not be loaded" if count else ""
    return (f"its weights do not fit the {what}{layers}; a file of another model or "
            "configuration?")
  if text.startswith("File not found: filepath="):
    return "not a .keras model file, which is a zip archive"
  if "file signature not found" in text:
    return "not an HDF5 weights file"
  first = text.splitlines()[0] if text else type(error).__name__
  return first if len(first) <= 200 else first[:197] + "..."


@contextlib.contextmanager
def loading(flag: str, path: str, what: str) -> Iterator[None]:
  """For a system module's load(): a failed load of `path` becomes WeightsFileError; Keras's
  warnings of that load (one per layer that did not fit) are dropped with it, and passed on
  if the load succeeds."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
      yield
    except FileNotFoundError:
      raise
    except (ValueError, TypeError, OSError, KeyError) as e:
      raise WeightsFileError(f"--{flag} {path}: cannot be loaded as the {what} "
                             f"({_why(e, what)})") from e
  for w in caught:
    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def load(name: str = DEFAULT, weights: Mapping[str, str | None] | None = None,
         correction: str = "l_moments", image_size: int | None = None) -> Any:
  """System `name` with its weights (flag -> path or preset name; default: its presets), as a
  tfharm.systems.base.System. image_size: S (default: the weights' own). Errors as
  `weight_files`, and WeightsFileError for a file its network cannot take."""
  files = weight_files(name, weights)
  return importlib.import_module(spec(name).module).load(files, correction, image_size)


def weight_flags() -> dict[str, tuple[str, str]]:
  """{weight flag: (its system, its default preset)} over every system, for the commands'
  flag definitions (tfharm.cli.program.define_model_flags)."""
  return {flag: (name, presets.DEFAULTS.get(kind, "none"))
          for name, s in SYSTEMS.items() for flag, kind in s.weights.items()}
