"""scripts/ship_joint.py: the recorded recipe is the run's newest invocation only."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_recipe_is_the_last_of_the_appended_invocations(tmp_path):
  """flags.txt gets one block per (re)start; the first flag's --x/--nox form starts each."""
  first = ["--augment", "--batch_size=8", "--learning_rate=0.001", "--workdir=/m/run"]
  resumed = ["--noaugment", "--batch_size=8", "--learning_rate=0.0005",
             "--data_dir=/m/data", "--generator_roots=/m/a,/m/b", "--workdir=/m/run"]
  (tmp_path / "flags.txt").write_text("\n".join(first + resumed) + "\n")
  code = ("import importlib.util, json, sys\n"
          f"spec = importlib.util.spec_from_file_location('s', {os.path.join(REPO, 'scripts', 'ship_joint.py')!r})\n"
          "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
          f"print(json.dumps(m.recipe({str(tmp_path / 'flags.txt')!r})))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       check=True).stdout
  assert json.loads(out.strip().splitlines()[-1]) == [
      "--noaugment", "--batch_size=8", "--learning_rate=0.0005"]
