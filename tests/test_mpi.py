"""Data-parallel training across real processes: each test launches ``mpiexec`` with a time limit
(the ranks run tests/mpi_worker.py or the ``minirattn`` command). Needs the ``dist`` extra
(mpi4py and MPICH from PyPI); skipped cleanly without it, unless MINIRATTN_REQUIRE_MPI=1 (CI) makes
that a failure."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minirattn.distributed import mpi_launcher
from minirattn.training import load_checkpoint

HERE = Path(__file__).parent
WORKER = str(HERE / "mpi_worker.py")
#: Seconds a launched job may take before the test fails (it is killed, never left hanging).
LIMIT = 120
#: Seconds from a rank's failure to the end of the whole job that the tests accept.
FAIL_BOUND = 10

# mpiexec on PATH or the one pip put beside this Python (the dist extra's MPICH), and what is
# missing otherwise: found as `minirattn train --procs` finds it
MPIEXEC, _why = mpi_launcher()
MISSING = f"{_why} (pip install -e '.[dist]')" if _why else None
if MISSING and os.environ.get("MINIRATTN_REQUIRE_MPI") == "1":
    raise RuntimeError(f"MINIRATTN_REQUIRE_MPI=1 but {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def launch(n, *args, env=None):
    """Run ``mpiexec -n n ARGS`` in its own process group; kill the group after LIMIT seconds.
    Returns (exit status, stdout + stderr, seconds)."""
    environ = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **(env or {}))
    environ["PYTHONPATH"] = os.pathsep.join([str(HERE), environ.get("PYTHONPATH", "")])
    environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), environ.get("PATH", "")])
    cmd = [MPIEXEC, "-n", str(n), *args] if n else list(args)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=environ, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish within {LIMIT} s:\n{out[-3000:]}")
    return proc.returncode, out, time.monotonic() - t0


def worker(n, *args):
    return launch(n, sys.executable, WORKER, *[str(a) for a in args])


@pytest.mark.parametrize("dtype,ranks,batch,bound", [
    ("float64", 2, 8, 1e-11),
    ("float64", 2, 7, 1e-11),        # uneven shards: 4 + 3
    ("float64", 3, 7, 1e-11),        # 3 + 2 + 2
    ("float32", 2, 8, 5e-5),         # each step's gradients, to float32 round-off
    ("float32", 2, 7, 5e-5),
])
def test_ranks_at_global_batch_b_give_the_weights_of_one_process_at_batch_b(
        tmp_path, dtype, ranks, batch, bound):
    out = tmp_path / "result.json"
    code, log, _ = worker(ranks, "equivalence", out, dtype, batch, 4, 0.01)
    assert code == 0, log
    result = json.loads(out.read_text())
    assert result["ranks"] == ranks
    assert result["moved"] > 1e-3                   # the steps changed the weights
    assert result["worst_relative"] < bound, result
    if dtype == "float32":             # as close to float64 as one float32 process gets
        assert result["worst_relative"] < 3 * result["single_process"], result


@pytest.mark.gpu
def test_ranks_on_cupy_give_the_weights_of_one_process(tmp_path):
    """The CuPy path of the communicator (NCCL on a GPU; without one, the strict stand-in and the
    host copies around MPI): 2 ranks in float64, uneven shards, against one NumPy process."""
    out = tmp_path / "result.json"
    code, log, _ = worker(2, "equivalence", out, "float64", 7, 4, 0.01, "cupy")
    assert code == 0, log
    result = json.loads(out.read_text())
    assert result["moved"] > 1e-3 and result["worst_relative"] < 1e-11, result


def weights(path):
    arrays, meta = load_checkpoint(str(path))
    return {k: v for k, v in arrays.items() if k.startswith("model.")}, meta


def assert_close(a, b, rtol):
    for k in a:
        scale = max(float(np.abs(b[k]).max()), 1e-6)
        assert float(np.abs(a[k] - b[k]).max()) <= rtol * scale, k


def test_two_ranks_train_the_run_one_process_trains_and_resume_on_either_count(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    code, log, _ = worker(2, "train", tmp_path / "two.json", 8, two)
    assert code == 0, log
    assert "rank 0: pid" in log and "rank 1: pid" in log     # which pid is which rank
    code, log, _ = worker(0, "train", tmp_path / "one.json", 8, one)   # no mpiexec: 1 process
    assert code == 0, log
    w2, meta2 = weights(two / "ckpt-00000008.rattn")
    w1, meta1 = weights(one / "ckpt-00000008.rattn")
    assert meta2["config"]["ranks"] == 2 and meta1["config"]["ranks"] == 1
    # float64, 8 steps at lr 0.1: round-off (1e-16) grows about tenfold a step on this net
    assert_close(w2, w1, 1e-6)
    # a checkpoint of 2 ranks resumed on 1 (and one of 1 on 2) continues the same run
    for folder, n, other in ((two, 0, w1), (one, 2, w2)):
        (folder / "ckpt-00000008.rattn").rename(folder / "finished.bak")
        code, log, _ = worker(n, "train", tmp_path / "again.json", 8, folder)
        assert code == 0, log
        assert "resuming from" in log and "ckpt-00000004" in log
        resumed, meta = weights(folder / "ckpt-00000008.rattn")
        assert_close(resumed, other, 1e-6)
        assert meta["config"]["resumes"][-1]["changed"]["ranks"] == ([2, 1] if n == 0 else [1, 2])


@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_failing_rank_ends_the_job_quickly_and_the_last_checkpoint_stays_readable(tmp_path,
                                                                                    how):
    marker, folder = tmp_path / "failed-at", tmp_path / "run"
    code, log, _ = worker(2, "train", marker, 1000, folder, f"{how}:10")
    ended = time.time()
    assert code != 0, log
    assert ended - float(marker.read_text()) < FAIL_BOUND, log
    if how == "raise":
        assert "rank 1 of 2 failed (RuntimeError: a failure injected by the test)" in log
    else:                             # the launcher names the killed pid; the start names its rank
        assert "BAD TERMINATION" in log and "rank 1: pid" in log
    _, meta = weights(folder / "ckpt-00000008.rattn")         # written before the failure
    assert meta["iteration"] == 8


def test_bad_setups_fail_before_training_with_one_clear_line(tmp_path):
    code, log, _ = launch(2, "minirattn", "train", "--batch-size", "7", "--iterations", "2",
                          "--checkpoint-dir", str(tmp_path / "r"), "--no-progress")
    assert code == 2
    assert log.count("batch_size 7 does not split evenly over 2 ranks") == 1, log
    assert not (tmp_path / "r").exists()
    code, log, _ = launch(2, "minirattn", "train", "--distributed", "no", "--iterations", "2",
                          "--checkpoint-dir", str(tmp_path / "r2"), "--no-progress")
    assert code == 2 and log.count("but distributed=False: every rank would train") == 1, log
    code, log, _ = worker(2, "version", tmp_path / "unused")
    assert code != 0
    assert "the ranks do not agree on code: rank 0: " in log and "rank 1: 0123456789abcdef" in log


def test_distributed_without_mpi4py_is_refused_with_how_to_install_it():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from minirattn.cli import main\n"
            "sys.exit(main(['train', '--distributed', 'yes', '--iterations', '1']))")
    status, log, _ = launch(0, sys.executable, "-c", code)
    assert status == 2
    assert "distributed training needs mpi4py and an MPI library: pip install 'minirattn[dist]'" \
        in log


def test_the_command_line_trains_data_parallel_under_mpiexec(tmp_path):
    folder = tmp_path / "cli"
    code, log, _ = launch(2, "minirattn", "train", "--iterations", "2", "--batch-size", "8",
                          "--n-train", "64", "--n-test", "16", "--eval-every", "2",
                          "--checkpoint-dir", str(folder), "--no-progress")
    assert code == 0, log
    assert log.count("test accuracy") == 1                    # rank 0 alone reports
    _, meta = weights(folder / "ckpt-00000002.rattn")
    assert meta["config"]["ranks"] == 2 and meta["config"]["sync_batchnorm"] is True


# ---- every core by default: minirattn train --procs ------------------------------------------
TINY_CLI = ["--iterations", "4", "--batch-size", "8", "--n-train", "64", "--n-test", "16",
            "--eval-every", "2", "--no-progress", "--dtype", "float64"]


def _cli(*args, env=None):
    """``minirattn ARGS`` as a user types it (no mpiexec), in its own session, time-limited."""
    return launch(0, sys.executable, "-m", "minirattn", *args, env=env)


def test_procs_2_and_auto_train_the_run_one_process_trains(tmp_path):
    from minirattn.distributed import cores, plan_ranks
    runs = {}
    for procs in ("1", "2", "auto"):
        folder = tmp_path / procs
        code, log, _ = _cli("train", "--procs", procs, *TINY_CLI, "--checkpoint-dir", str(folder))
        assert code == 0, log
        assert log.count("test accuracy") == 1, log                # reported once
        runs[procs] = weights(folder / "ckpt-00000004.rattn")
    expected_auto = plan_ranks("auto", 8)[0]
    assert expected_auto == max(k for k in range(1, cores() + 1) if 8 % k == 0)
    assert [runs[p][1]["config"]["ranks"] for p in ("1", "2", "auto")] == [1, 2, expected_auto]
    for procs in ("2", "auto"):                                     # float64: the same weights
        assert_close(runs[procs][0], runs["1"][0], 1e-9)


def _running(pid):
    """Whether pid is a live process (a zombie waiting for its parent is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ranks_under(pid):
    """The pids of the rank processes (their environment names a PMI_RANK) descending from pid."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                if b"PMI_RANK=" in f.read():
                    found.append(p)
        except OSError:
            continue
    return sorted(found)


@pytest.mark.parametrize("how,sigint", [("ctrl-c", signal.SIG_DFL), ("ctrl-c", signal.SIG_IGN),
                                        ("kill a rank", signal.SIG_DFL)])
def test_ctrl_c_or_a_dying_rank_ends_every_rank_and_the_checkpoint_stays(tmp_path, how, sigint):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it; also where the command itself
    ignores SIGINT and only the ranks see it) or a rank killed: every rank ends within seconds,
    the job says so once, and the newest checkpoint reads back whole."""
    folder = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "minirattn", "train", "--procs", "2",
                             "--iterations", "100000", "--batch-size", "8", "--n-train", "64",
                             "--n-test", "16", "--eval-every", "2", "--no-progress",
                             "--checkpoint-dir", str(folder)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    try:
        deadline = time.monotonic() + LIMIT
        while not list(folder.glob("ckpt-*.rattn")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(folder.glob("ckpt-*.rattn")), "no checkpoint was written"
        ranks = _ranks_under(proc.pid)
        assert len(ranks) == 2, ranks
        t0 = time.monotonic()
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)                  # what a terminal's Ctrl-C does
        else:
            os.kill(ranks[1], signal.SIGKILL)
        out, _ = proc.communicate(timeout=LIMIT)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode != 0 and took < FAIL_BOUND, (took, out[-2000:])
    if how == "ctrl-c":                                        # said once, by the launcher
        assert out.count("minirattn: interrupted; ending all 2 ranks") == 1, out[-2000:]
    time.sleep(0.5)
    assert not [p for p in ranks if _running(p)]                  # every rank has ended
    newest = sorted(folder.glob("ckpt-*.rattn"))[-1]
    _, meta = weights(newest)                                   # whole and verified
    assert meta["iteration"] >= 2


def test_procs_without_mpi4py_runs_one_process_and_says_how_to_get_the_rest(tmp_path):
    from minirattn.distributed import plan_ranks
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from minirattn.cli import main\n"
            f"sys.exit(main(['train', *{TINY_CLI!r}, '--checkpoint-dir', {str(tmp_path / 'r')!r}]))")
    status, log, _ = launch(0, sys.executable, "-c", code)
    assert status == 0, log
    _, meta = weights(tmp_path / "r" / "ckpt-00000004.rattn")
    assert meta["config"]["ranks"] == 1
    notes = [line for line in log.splitlines() if "pip install -e '.[dist]'" in line]
    if plan_ranks("auto", 8)[0] > 1:                             # more than one core here
        assert len(notes) == 1 and "one process (mpi4py is not installed)" in notes[0], log
    code = code.replace("'train', ", "'train', '--procs', '2', ")
    status, log, _ = launch(0, sys.executable, "-c", code)
    assert status == 2 and "--procs 2 needs the dist extra (mpi4py is not installed)" in log, log


def test_procs_refuses_what_cannot_run(tmp_path):
    code, log, _ = _cli("train", "--procs", "3", *TINY_CLI, "--checkpoint-dir", str(tmp_path))
    assert code == 2 and "--procs 3: batch_size 8 does not split evenly over 3 ranks" in log, log
    code, log, _ = _cli("train", "--procs", "many", *TINY_CLI, "--checkpoint-dir", str(tmp_path))
    assert code == 2 and "--procs: expected 'auto' or a number of ranks >= 1, got 'many'" in log


@pytest.fixture
def two_network_namespaces(tmp_path):
    """Two network namespaces joined by a veth pair (10.77.x.1 and .2), one per rank, and a
    wrapper that runs rank r in namespace r talking over its veth end only. Needs root and the
    ``ip`` command (CAP_NET_ADMIN); skipped where they are missing."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and the ip command to make network namespaces")
    tag = f"mr{os.getpid() % 100000}"
    names, ends = [f"{tag}n0", f"{tag}n1"], [f"{tag}v0", f"{tag}v1"]
    subnet = f"10.77.{os.getpid() % 250}"

    def ip(*args, ns=None):
        cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *args]
        return subprocess.run(cmd, capture_output=True, text=True)
    made = ip("netns", "add", names[0])
    if made.returncode != 0:
        pytest.skip(f"cannot make network namespaces here: {made.stderr.strip()}")
    try:
        ip("netns", "add", names[1])
        ip("link", "add", ends[0], "type", "veth", "peer", "name", ends[1])
        for i in (0, 1):
            ip("link", "set", ends[i], "netns", names[i])
            ip("addr", "add", f"{subnet}.{i + 1}/24", "dev", ends[i], ns=names[i])
            ip("link", "set", ends[i], "up", ns=names[i])
            ip("link", "set", "lo", "up", ns=names[i])
        wrapper = tmp_path / "in-namespace.sh"
        wrapper.write_text("#!/bin/sh\n"
                           f"case $PMI_RANK in 0) NS={names[0]} DEV={ends[0]};; "
                           f"*) NS={names[1]} DEV={ends[1]};; esac\n"
                           'exec ip netns exec $NS env UCX_NET_DEVICES=$DEV "$@"\n')
        wrapper.chmod(0o755)
        hosts = tmp_path / "hosts"
        hosts.write_text("node-a:1\nnode-b:1\n")        # two "machines": no shared memory

        def sent():
            out = subprocess.run(["ip", "netns", "exec", names[0], "cat",
                                  f"/sys/class/net/{ends[0]}/statistics/tx_bytes"],
                                 capture_output=True, text=True).stdout
            return int(out)
        yield dict(wrapper=str(wrapper), hosts=str(hosts), sent=sent)
    finally:
        for name in names:
            ip("netns", "delete", name)                 # deletes the veth pair with it


def test_two_ranks_across_a_simulated_network(tmp_path, two_network_namespaces):
    """The float64 equivalence again, with the ranks in two network namespaces on two "hosts":
    MPICH talks TCP over the veth pair (UCX's tcp transport only), not shared memory."""
    net = two_network_namespaces
    before = net["sent"]()
    out = tmp_path / "result.json"
    code, log, _ = launch(2, "-launcher", "fork", "-f", net["hosts"], "-env", "UCX_TLS",
                          "tcp,self", net["wrapper"], sys.executable, WORKER, "equivalence",
                          str(out), "float64", "8", "4", "0.01")
    assert code == 0, log
    result = json.loads(out.read_text())
    assert result["worst_relative"] < 1e-11, result
    # the 4 gradient all-reduces alone (8 bytes per parameter) crossed the link
    assert net["sent"]() - before > 4 * 8 * 5_000, "the ranks did not talk over the veth pair"


def test_reproduce_under_mpiexec_runs_each_run_data_parallel(tmp_path):
    code = ("import json, sys\n"
            "from helpers import TINY_NET\n"
            "from minirattn import experiments as E\n"
            "tiny = dict(dataset='shapes', n_train=64, n_test=32, batch_size=8, iterations=4,\n"
            "            eval_every=2, log_every=2, model_kwargs=TINY_NET)\n"
            f"r = E.reproduce('table4', seeds=1, out={str(tmp_path)!r}, overrides=tiny,\n"
            "                progress=False)\n"
            "from minirattn.distributed import launched_rank\n"
            f"with open({str(tmp_path)!r} + f'/rank{{launched_rank()}}.txt', 'w') as f:\n"
            "    print('ranks', r['runs'][0]['config']['ranks'], 'runs', len(r['runs']), file=f)\n")
    status, log, _ = launch(2, sys.executable, "-c", code)
    assert status == 0, log
    for rank in (0, 1):                                    # every rank has every result
        assert (tmp_path / f"rank{rank}.txt").read_text() == "ranks 2 runs 2\n", log
    assert log.count("Table 4: mask structure") == 2      # the start line and the summary, once
    assert (tmp_path / "table4-small.json").exists() and (tmp_path / "table4-small.png").exists()
