"""Where exports and weights go: checked before TensorFlow is imported, so a command with a
missing weight file or an existing version fails in a second, not after loading ~100 MB."""
from __future__ import annotations

import os
import re
import shutil

from absl import logging

from tfharm import presets

DEFAULT_DETECTOR = presets.get(presets.DEFAULT_DETECTOR).weights_path
DEFAULT_HARMONISER = presets.get(presets.DEFAULT_HARMONISER).weights_path


class VersionExistsError(FileExistsError):
  """The version directory is already there and overwriting was not asked for."""


def resolve_weights(detector_weights: str | None = None,
                    harmoniser_weights: str | None = None) -> tuple[str, str]:
  """The two weight files (paths or preset names; defaults: the shipped presets, package data
  of tfharm); raises FileNotFoundError naming every missing one."""
  paths = (presets.resolve(detector_weights, "detector", presets.DEFAULT_DETECTOR),
           presets.resolve(harmoniser_weights, "harmoniser", presets.DEFAULT_HARMONISER))
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(
        "missing weights: " + ", ".join(missing) + ". The defaults are the shipped presets "
        "(tfharm/presets/README.md); pass --detector_weights / --harmoniser_weights to use "
        "other files.")
  return paths


def next_version(export_dir: str) -> int:
  """1 + the largest numeric version under export_dir (1 if none): TF Serving serves the
  highest version, so a new export without --version becomes the served one."""
  if not os.path.isdir(export_dir):
    return 1
  versions = [int(n) for n in os.listdir(export_dir) if n.isdigit()]
  return max(versions, default=0) + 1


def target(export_dir: str, version: int | None = None,
           overwrite: bool = False) -> tuple[int, str]:
  """(version, path) an export would write; refuses an existing version unless overwrite."""
  version = next_version(export_dir) if version is None else int(version)
  if version < 0:
    raise ValueError(f"version must be a non-negative integer, got {version}")
  final = os.path.join(export_dir, str(version))
  if os.path.exists(final) and not overwrite:
    raise VersionExistsError(f"{final} already exists; pass --overwrite to replace it, or "
                             "choose another --version")
  return version, final


_TEMPORARY_RE = re.compile(r"^\.(tmp|old)-(\d+)-(\d+)$")


def clean_interrupted(export_dir: str) -> list[str]:
  """What a killed export left in export_dir (`.tmp-<version>-<pid>`: a half-written version;
  `.old-<version>-<pid>`: the version being replaced by --overwrite), for pids that are gone:
  a half-written one is removed; a replaced one is put back if its version is missing (the
  kill came between the two renames), else removed. Returns what was done, also logged."""
  from tfharm.cli import outputs  # pylint: disable=g-import-not-at-top
  done = []
  if not os.path.isdir(export_dir):
    return done
  for name in sorted(os.listdir(export_dir)):
    m = _TEMPORARY_RE.match(name)
    if not m or outputs.pid_alive(int(m.group(3))):
      continue
    path, final = os.path.join(export_dir, name), os.path.join(export_dir, m.group(2))
    if m.group(1) == "old" and not os.path.exists(final):
      os.rename(path, final)
      done.append(f"restored {final} from {name}")
    else:
      shutil.rmtree(path, ignore_errors=True)
      done.append(f"removed {name}")
  for line in done:
    logging.info("interrupted export: %s", line)
  return done


# --- which model serves (tfharm.harmonise, tfharm.export; --model) ---------------------------
# "pipeline": the detector + harmoniser; "joint": the joint model (tfharm.models.joint). The one
# line to change when the joint model wins on validation (docs/joint.md).
DEFAULT_MODEL = "joint"
MODELS = ("pipeline", "joint")
DEFAULT_JOINT = presets.get(presets.DEFAULT_JOINT).weights_path


def check_weight_flags(model: str, detector_weights: str | None = None,
                       harmoniser_weights: str | None = None,
                       joint_weights: str | None = None) -> None:
  """ValueError when weights are given for the model that will not run: without it, a user
  who passes --detector_weights to the joint default (or --joint_weights to the pipeline)
  would silently get the other system's output."""
  other = ({"--detector_weights": detector_weights, "--harmoniser_weights": harmoniser_weights}
           if model == "joint" else {"--joint_weights": joint_weights})
  given = [name for name, value in other.items() if value]
  if given:
    wanted = "pipeline" if model == "joint" else "joint"
    raise ValueError(f"{' and '.join(given)} apply to --model={wanted}, but --model={model} "
                     f"runs{' (the default)' if model == DEFAULT_MODEL else ''}; add "
                     f"--model={wanted} or drop {' and '.join(given)}")


def resolve_joint_weights(joint_weights: str | None = None) -> str:
  """The joint model's file (a path or preset name; default: preset joint_256, package data);
  FileNotFoundError if it is missing."""
  path = presets.resolve(joint_weights, "joint", presets.DEFAULT_JOINT)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"missing joint model weights: {path}. Pass --joint_weights=<workdir>/joint.keras (or "
        ".weights.h5) of a `python -m tfharm.train --model=joint` run, or a preset name "
        "(tfharm/presets/README.md).")
  return path


def model_weights(model: str, detector_weights: str | None = None,
                  harmoniser_weights: str | None = None,
                  joint_weights: str | None = None) -> dict[str, str]:
  """The weight files `model` runs, as the keyword arguments of
  exporter.load_serving_pipeline and app.handling.load_modules ({"joint_weights": path} or
  {"detector_weights": ..., "harmoniser_weights": ...}), after `check_weight_flags`: the one
  step every serving program (harmonise, export, app) takes from its flags to its files.
  ValueError or FileNotFoundError as those two say."""
  if model not in MODELS:
    raise ValueError(f"unknown model {model!r}; one of {', '.join(MODELS)}")
  check_weight_flags(model, detector_weights, harmoniser_weights, joint_weights)
  if model == "joint":
    return {"joint_weights": resolve_joint_weights(joint_weights)}
  return dict(zip(("detector_weights", "harmoniser_weights"),
                  resolve_weights(detector_weights, harmoniser_weights)))
