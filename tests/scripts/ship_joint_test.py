"""scripts/ship_joint.py: the recorded recipe is the run's newest start, machine paths left out."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_recipe_is_the_last_start_without_machine_paths(tmp_path):
  first = ["--augment", "--batch_size=8", "--learning_rate=0.001", "--workdir=/m/run"]
  resumed = ["--noaugment", "--batch_size=8", "--data_dir=/m/data",
             "--generator_roots=/m/a,/m/b", "--learning_rate=0.0005", "--workdir=/m/run"]
  (tmp_path / "flags.txt").write_text("\n".join(first + resumed) + "\n")
  script = os.path.join(REPO, "scripts", "ship_joint.py")
  code = ("import importlib.util, json\n"  # the script defines absl flags: its own process
          f"spec = importlib.util.spec_from_file_location('s', {script!r})\n"
          "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
          f"print(json.dumps(m.recipe({str(tmp_path)!r})))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       check=True).stdout
  assert json.loads(out.strip().splitlines()[-1]) == [
      "--noaugment", "--batch_size=8", "--learning_rate=0.0005"]
