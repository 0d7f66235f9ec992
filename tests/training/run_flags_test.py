"""tfharm.training.run_flags: a resumed run's flags.txt splits into its starts."""
from tfharm.training import run_flags

FIRST = ["--augment", "--batch_size=8", "--learning_rate=0.001", "--workdir=/m/run"]
RESUMED = ["--noaugment", "--batch_size=8", "--learning_rate=0.0005", "--workdir=/m/run"]


def test_each_start_is_one_block_oldest_first(tmp_path):
  """A block starts at the first (sorted) flag again, whichever boolean form it takes."""
  (tmp_path / "flags.txt").write_text("\n".join(FIRST + RESUMED + FIRST) + "\n")
  assert run_flags.invocations(str(tmp_path)) == [FIRST, RESUMED, FIRST]
  (tmp_path / "flags.txt").write_text("\n".join(FIRST) + "\n")
  assert run_flags.invocations(str(tmp_path)) == [FIRST]
  (tmp_path / "flags.txt").write_text("")
  assert run_flags.invocations(str(tmp_path)) == []
