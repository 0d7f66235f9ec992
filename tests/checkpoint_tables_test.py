"""tfharm/presets/README.md's tables are the scripts' output of the shipped records, not retyped
numbers (scripts/checkpoint_tables.py for the two networks, scripts/mask_free_table.py for the
joint model)."""
import importlib.util
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _readme() -> str:
  with open(os.path.join(REPO, "tfharm", "presets", "README.md")) as f:
    return f.read()


def test_readme_tables_are_generated_from_the_metrics_records():
  tables, readme = _script("checkpoint_tables"), _readme()
  for table in (tables.harmoniser_table(tables._load("harmoniser_256.metrics.json")),
                tables.detector_table(tables._load("detector_256.metrics.json"))):
    assert table in readme, "re-run `python scripts/checkpoint_tables.py` and paste its output"


def test_readme_joint_tables_are_generated_from_its_record():
  tables, readme = _script("mask_free_table"), _readme()
  with open(os.path.join(REPO, "tfharm", "presets", "joint_256.metrics.json")) as f:
    record = json.load(f)
  for split in ("validation", "test"):
    assert tables.table_of(record[split], f"Split `{split}`") in readme, (
        "re-run `python scripts/mask_free_table.py tfharm/presets/joint_256.metrics.json` and "
        "paste its output")
