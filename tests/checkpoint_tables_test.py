"""checkpoints/README.md's tables are scripts/checkpoint_tables.py's output, not retyped numbers."""
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_tables_are_generated_from_the_metrics_records():
  spec = importlib.util.spec_from_file_location(
      "checkpoint_tables", os.path.join(REPO, "scripts", "checkpoint_tables.py"))
  tables = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tables)
  with open(os.path.join(REPO, "checkpoints", "README.md")) as f:
    readme = f.read()
  for table in (tables.harmoniser_table(tables._load("harmoniser_256.metrics.json")),
                tables.detector_table(tables._load("detector_256.metrics.json"))):
    assert table in readme, "re-run `python scripts/checkpoint_tables.py` and paste its output"


def test_readme_joint_tables_are_generated_from_its_record():
  spec = importlib.util.spec_from_file_location(
      "mask_free_table", os.path.join(REPO, "scripts", "mask_free_table.py"))
  tables = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tables)
  with open(os.path.join(REPO, "checkpoints", "README.md")) as f:
    readme = f.read()
  record = os.path.join(REPO, "tfharm", "presets", "joint_256.metrics.json")
  for table in tables.table(record).split("\n\n" + "Split "):
    assert table.removeprefix("Split ") in readme, (
        "re-run `python scripts/mask_free_table.py tfharm/presets/joint_256.metrics.json` and "
        "paste its output")
