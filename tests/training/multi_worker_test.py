"""Two workers on 127.0.0.1 (MultiWorkerMirroredStrategy over TF_CONFIG, CPU): each draws its own
shard of the online stream and resumes it, their weights agree, and a killed cluster resumes
from the chief's checkpoint through the same `python -m tfharm.train` commands."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import DEMO_ROOT
from tests.training.fake_data import latest_step
from tfharm.training import run_flags

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKERS = 2


def _free_ports(n: int) -> list[int]:
  socks = [socket.socket() for _ in range(n)]
  try:
    for s in socks:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in socks]
  finally:
    for s in socks:
      s.close()


def _env(ports: list[int], index: int) -> dict[str, str]:
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  return dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": index}}))


def _start(args: list[str], ports: list[int], logs) -> list[subprocess.Popen]:
  """One process per worker, its output in logs[k] (a file: a pipe could fill and block)."""
  procs = []
  for k in range(WORKERS):
    with open(logs[k], "a") as out:
      procs.append(subprocess.Popen([sys.executable, *args], cwd=REPO, env=_env(ports, k),
                                    stdout=out, stderr=subprocess.STDOUT))
  return procs


def _wait(procs, timeout: float, logs) -> None:
  deadline = time.time() + timeout
  for proc, log in zip(procs, logs):
    try:
      proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      pytest.fail(f"workers did not finish in {timeout} s: {_tail(log)}")


def _tail(path, n: int = 3000) -> str:
  with open(path) as f:
    return f.read()[-n:]


PROBE = textwrap.dedent("""
    import hashlib, json
    import tensorflow as tf
    from tests.conftest import DEMO_ROOT
    from tfharm import training
    from tfharm.data import generator
    from tfharm.models.harmoniser import HarmoniserConfig
    from tfharm.training import loop
    from tfharm.training.tasks import harmoniser

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    source = generator.CompositeSource([DEMO_ROOT], generator.GeneratorOptions(image_size=32))
    task = harmoniser.HarmoniserTask(harmoniser.HarmoniserTaskConfig(HarmoniserConfig(32)))
    opts = training.TrainOptions(workdir="", data_dir="", train_source="generator",
                                 batch_size={batch}, augment=False)

    def draws(position, steps):
      it = iter(loop.distribute_training_data(strategy, opts, task, None, 0, source.dataset,
                                              position))
      out = []
      for _ in range(steps):
        (local,) = strategy.experimental_local_results(next(it))
        out.append([hashlib.sha1(local["composite"][i].numpy().tobytes() +
                                 local["mask"][i].numpy().tobytes()).hexdigest()
                    for i in range(local["composite"].shape[0])])
      return out

    print("DRAWS", json.dumps({{"straight": draws(0, 3), "resumed": draws(2 * {batch}, 1)}}))
""")


def test_each_worker_draws_its_own_shard_and_resumes_it(tmp_path):
  """Worker k of 2 draws examples k, k+2, ... (half of each global batch of 4); a stream
  resumed at data_position 8 continues each worker's shard where two steps left it."""
  batch = 4
  ports, logs = _free_ports(WORKERS), [tmp_path / f"probe{k}.log" for k in range(WORKERS)]
  procs = _start(["-c", PROBE.format(batch=batch)], ports, logs)
  _wait(procs, 600, logs)
  draws = []
  for proc, log in zip(procs, logs):
    text = _tail(log, 10**6)
    assert proc.returncode == 0, text[-3000:]
    draws.append(json.loads(text.split("DRAWS ", 1)[1].splitlines()[0]))

  from tfharm.data import generator  # pylint: disable=g-import-not-at-top
  import hashlib  # pylint: disable=g-import-not-at-top
  source = generator.CompositeSource([DEMO_ROOT], generator.GeneratorOptions(image_size=32))
  one = next(iter(source.dataset(0, batch_size=3 * batch, augment=False)))  # one process
  expected = [hashlib.sha1(one["composite"][i].numpy().tobytes() +
                           one["mask"][i].numpy().tobytes()).hexdigest()
              for i in range(3 * batch)]
  for k, d in enumerate(draws):
    for step in range(3):
      assert d["straight"][step] == expected[step * batch + k:(step + 1) * batch:WORKERS], (k, step)
    assert d["resumed"] == d["straight"][2:], k
  assert draws[0]["straight"] != draws[1]["straight"]


def _train_args(data_dir: str, workdir: str, steps: int) -> list[str]:
  return ["-m", "tfharm.train", "--model=harmoniser", "--image_size=256",
          "--strategy=multi_worker", "--train_source=generator", f"--generator_roots={DEMO_ROOT}",
          f"--data_dir={data_dir}", f"--workdir={workdir}", "--batch_size=2", f"--steps={steps}",
          "--checkpoint_every=1", "--keep_checkpoints=20", "--log_every=1", "--eval_every=0",
          "--eval_batch_size=2", "--max_eval_examples=2", "--learning_rate=1e-3"]


def _checkpoint_steps(directory: str) -> dict[int, str]:
  state = tf.train.get_checkpoint_state(directory)
  paths = state.all_model_checkpoint_paths if state else []
  return {int(p.rsplit("-", 1)[-1]): p for p in paths}


def _same_tensors(a: str, b: str) -> int:
  ra, rb = tf.train.load_checkpoint(a), tf.train.load_checkpoint(b)
  names = sorted(n for n in ra.get_variable_to_shape_map() if "OBJECT_GRAPH" not in n)
  assert names == sorted(n for n in rb.get_variable_to_shape_map() if "OBJECT_GRAPH" not in n)
  for n in names:
    np.testing.assert_array_equal(ra.get_tensor(n), rb.get_tensor(n), err_msg=n)
  return len(names)


def test_two_workers_train_agree_and_a_killed_cluster_resumes(demo_build, tmp_path):
  """The command on two workers: each logs its shard of the stream; both keep identical
  weights; SIGKILL one worker (the other cannot go on), rerun the same two commands, and
  training continues from the chief's last checkpoint on both; only the chief writes files."""
  steps, kill_after = 8, 2
  data_dir = demo_build.data_dir.split("/luminance_composites/")[0]
  workdir = str(tmp_path / "run")
  chief_dir, worker_dir = os.path.join(workdir, "checkpoints"), os.path.join(workdir,
                                                                            "tmp_worker_1")
  args, ports = _train_args(data_dir, workdir, steps), _free_ports(WORKERS)
  logs = [tmp_path / f"worker{k}.log" for k in range(WORKERS)]
  procs = _start(args, ports, logs)
  deadline = time.time() + 900
  while (latest_step(chief_dir) or 0) < kill_after:
    if time.time() > deadline or any(p.poll() is not None for p in procs):
      for p in procs:
        p.kill()
      pytest.fail(f"no checkpoint {kill_after} while both ran: {_tail(logs[0])}")
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGKILL)
  procs[1].wait()
  try:  # without its peer the chief's next all-reduce fails (TF's peer health check)
    procs[0].wait(timeout=180)
  except subprocess.TimeoutExpired:
    procs[0].kill()
    procs[0].wait()
  killed_at = latest_step(chief_dir)
  assert kill_after <= killed_at < steps, _tail(logs[0])
  for k in range(WORKERS):
    assert f"Online stream, worker {k} of 2: examples {k}, {k + 2}, ..." in _tail(logs[k], 10**6)

  # (b) every step both wrote holds the same model, optimizer, step and data position
  chief, worker = _checkpoint_steps(chief_dir), _checkpoint_steps(worker_dir)
  common = sorted(set(chief) & set(worker))
  assert common and common[-1] >= kill_after - 1, (chief, worker)
  for s in common:
    assert _same_tensors(chief[s], worker[s]) > 10

  # (c) the same commands again: both restore the chief's checkpoint and finish
  for log in logs:
    with open(log, "a") as f:
      f.write("\n==== rerun ====\n")
  procs = _start(args, ports, logs)
  _wait(procs, 900, logs)
  position = killed_at * 2
  for k, (proc, log) in enumerate(zip(procs, logs)):
    rerun = _tail(log, 10**6).split("==== rerun ====", 1)[1]
    assert proc.returncode == 0, rerun[-3000:]
    assert f"checkpoints/ckpt-{killed_at} at step {killed_at} ({position} training" in rerun, k
    assert (f"Online stream, worker {k} of 2: examples {position + k}, {position + k + 2}, ..."
            in rerun), k
  assert latest_step(chief_dir) == steps
  reader = tf.train.load_checkpoint(chief_dir)
  assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == steps
  assert reader.get_tensor("data_position/.ATTRIBUTES/VARIABLE_VALUE") == 2 * steps
  # only the chief writes: its exports, logs and one flags block per start; the worker's
  # checkpoint copy is removed at the end
  assert os.path.exists(os.path.join(workdir, "harmoniser.weights.h5"))
  assert not os.path.exists(worker_dir)
  assert len(run_flags.invocations(workdir)) == 2
  assert sorted(os.listdir(workdir)) == ["checkpoints", "flags.txt", "harmoniser.keras",
                                         "harmoniser.weights.h5", "logs"]
