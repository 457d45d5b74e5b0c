"Batches of notebooks with real kernels, a real MLflow store, the real CLI, and a real Dask scheduler with two workers."
import csv
import os
import signal
import socket
import subprocess
import time

import psutil
import pytest
from mlflow.tracking import MlflowClient

from mlops_course.batch import Job, load_grid, make_jobs, run_batch, stop_workers
from mlops_course.config import load_settings
from mlops_course.notebooks import write_notebook
from conftest import BIN, ROOT, raises, run_cli, sigint_default


SWEEP = ("lr: float = 0.1  # learning rate\nsteps: int = 3  # steps",
         "import os\nfrom mlops_course.pipeline import log_metrics\nw = 0.0\n"
         "for _ in range(steps): w -= lr * 2 * (w - 3)\n"
         "open('pid.txt', 'w').write(str(os.getpid()))\n"
         "log_metrics(loss=(w - 3) ** 2)")


def expected_loss(lr, steps):
    w = 0.0
    for _ in range(steps): w -= lr * 2 * (w - 3)
    return (w - 3) ** 2


@pytest.fixture
def setup(tmp_path, work_env):
    settings = load_settings(env=work_env)
    yield tmp_path, settings, work_env
    stop_workers()


def runs_of(settings, parent_id):
    client = MlflowClient(settings.tracking_uri)
    parent = client.get_run(parent_id)
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return parent, {r.data.tags["mlops_course.job"]: r for r in kids}


def nothing_running(settings):
    client = MlflowClient(settings.tracking_uri)
    exp = client.get_experiment_by_name(settings.experiment)
    return client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'") == []


def batch_run_id(stdout):
    line = next(l for l in stdout.splitlines() if "MLflow run" in l)
    return line.rsplit(" ", 1)[1]


def test_sweep_from_a_grid_file_through_the_cli(setup):
    "A grid file through the real CLI: table, CSV, HTML, figure, MLflow runs; then the README's own sweep command, as an instructor types it."
    folder, settings, env = setup
    nb = write_notebook(folder/"descent.ipynb", *SWEEP)
    (folder/"grid.yaml").write_text("grid:\n  lr: [0.05, 0.25, 0.5]\n  steps: [1, 4]\nsets:\n  - {lr: 1.1, steps: 2}\n")
    r = run_cli("batch", nb, "--grid", folder/"grid.yaml", "--workers", "2", "--out", folder/"out", "--name", "sweep", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    sets = load_grid(folder/"grid.yaml")
    assert len(sets) == 7
    # the table in the terminal: a header with the parameters and the metric, a row per job
    header = next(l for l in r.stdout.splitlines() if l.startswith("name"))
    assert header.split() == ["name", "lr", "steps", "loss", "status", "seconds", "attempts", "error"]
    assert sum(l.startswith("descent-") and " ok " in l for l in r.stdout.splitlines()) == 7
    rows = list(csv.DictReader(open(folder/"out"/"results.csv")))
    assert [(float(x["lr"]), int(x["steps"])) for x in rows] == [(s["lr"], s["steps"]) for s in sets]
    for x in rows: assert float(x["loss"]) == pytest.approx(expected_loss(float(x["lr"]), int(x["steps"])))
    html = (folder/"out"/"results.html").read_text()
    assert "descent-7" in html and "data:image/png;base64" in html and (folder/"out"/"results.png").stat().st_size > 1000
    # MLflow: a FINISHED batch run and one FINISHED child per job, with its parameters and the metric it logged
    parent, kids = runs_of(settings, batch_run_id(r.stdout))
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_ok"] == 7 and parent.data.tags["mlops_course.kind"] == "batch"
    assert sorted(kids) == [f"descent-{i}" for i in range(1, 8)]
    for x in rows:
        kid = kids[x["name"]]
        assert kid.info.status == "FINISHED" and kid.data.params == {"lr": x["lr"], "steps": x["steps"]}
        assert kid.data.metrics["loss"] == pytest.approx(float(x["loss"]))
        assert (folder/"out"/x["name"]/f"{x['name']}.ipynb").exists()  # its executed notebook, in its own folder
    # each job had its own working folder and its own kernel process
    pids = {(folder/"out"/f"descent-{i}"/"pid.txt").read_text() for i in range(1, 8)}
    assert len(pids) == 7
    assert nothing_running(settings)

    # the sweep of the README's *For instructors*, typed as it is there (on a smaller grid), in a folder where its relative paths hold
    readme = (ROOT/"README.md").read_text()
    command = "mlops-course batch nbs/pipeline/ingest.ipynb --grid grid.yaml -p n_rows=5000"
    assert command in readme and "printf 'grid:\\n  drift: [0.0, 0.25, 0.5, 0.75, 1.0]\\n  seed: [1, 2]\\n' > grid.yaml" in readme
    (folder/"instructor").mkdir()
    (folder/"instructor"/"nbs").symlink_to(ROOT/"nbs")
    (folder/"instructor"/"grid.yaml").write_text("grid:\n  drift: [0.0, 1.0]\n  seed: [1]\n")
    r = subprocess.run(["sh", "-c", command], cwd=folder/"instructor", env={**env, "PATH": f"{BIN}:{env.get('PATH', '')}"},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    results = next(l for l in r.stdout.splitlines() if l.startswith("Results: ")).removeprefix("Results: ").split(", ")[0]
    rows = list(csv.DictReader(open(results)))
    assert [(float(x["drift"]), int(x["seed"]), int(x["n_rows"]), x["status"]) for x in rows] == [(0.0, 1, 5000, "ok"), (1.0, 1, 5000, "ok")]
    assert all(float(x["rows"]) == 5000 and 0 < float(x["churn_rate"]) < 1 for x in rows)
    assert results.startswith(str(settings.work_dir/"batches")) and not list((folder/"instructor").glob("*.parquet"))  # its files: in the work dir
    assert nothing_running(settings)


def test_failures_are_contained_dead_kernels_retried_and_only_failed_reuses(setup):
    folder, settings, env = setup
    good = write_notebook(folder/"good.ipynb", *SWEEP)
    shaky = write_notebook(folder/"shaky.ipynb", "marker: str = 'x'  # first attempt dies",
                     "import os, pathlib\nif not pathlib.Path(marker).exists():\n    pathlib.Path(marker).touch(); os._exit(1)\nx = 1")
    bad = write_notebook(folder/"bad.ipynb", "n: int = 1  # anything", "y = n + 1\nraise ValueError(f'broken notebook {n}')")
    slow = write_notebook(folder/"slow.ipynb", "s: float = 60  # seconds", "import time\ntime.sleep(s)")
    doomed = write_notebook(folder/"doomed.ipynb", None, "import os\nos._exit(3)")  # its kernel dies every time
    jobs = (make_jobs([good], [{"lr": 0.1}, {"lr": 0.2}]) + make_jobs([shaky], [{"marker": str(folder/"marker")}])
            + make_jobs([bad]) + [Job("slow", slow), Job("doomed", doomed)])
    seen = []
    result = run_batch(jobs, out_dir=folder/"first", workers=2, retries=1, notebook_timeout=4, settings=settings,
                       name="mixed", progress=False, on_done=lambda r: seen.append(r.name))
    by = {r.name: r for r in result.results}
    assert sorted(seen) == sorted(by) and [r.name for r in result.results] == ["good-1", "good-2", "shaky", "bad", "slow", "doomed"]
    assert by["good-1"].status == by["good-2"].status == "ok" and by["good-2"].metrics == {"loss": pytest.approx(expected_loss(0.2, 3))}
    assert by["shaky"].status == "ok" and by["shaky"].attempts == 2  # the dead kernel was retried
    assert by["doomed"].status == "dead kernel" and by["doomed"].attempts == 2  # retries=1: K + 1 attempts, then it gives up
    assert by["bad"].status == "failed" and by["bad"].cell == 2 and "ValueError: broken notebook 1" in by["bad"].error
    assert by["slow"].status == "timeout" and by["slow"].attempts == 1
    assert result.status == "failed" and result.counts() == {"ok": 3, "failed": 1, "timeout": 1, "dead kernel": 1}
    parent, kids = runs_of(settings, result.run_id)
    assert parent.info.status == "FINISHED"
    assert {n: k.info.status for n, k in kids.items()} == {"good-1": "FINISHED", "good-2": "FINISHED", "shaky": "FINISHED", "bad": "FAILED",
                                                           "slow": "FAILED", "doomed": "FAILED"}
    assert kids["bad"].data.tags["mlops_course.cell"] == "2" and kids["shaky"].data.tags["mlops_course.attempts"] == "2"
    assert kids["doomed"].data.tags["mlops_course.attempts"] == "2" and kids["doomed"].data.tags["mlops_course.status"] == "dead kernel"
    table = result.table()
    assert list(table["status"]) == ["ok", "ok", "ok", "failed", "timeout", "dead kernel"] and table.loc[3, "error"].startswith("In [2]: ValueError")

    # fix the broken notebooks and edit the shaky one (a comment: its content changes, so it must run again though it succeeded);
    # re-run only what failed, from the CLI, with the batch's own jobs
    write_notebook(bad, "n: int = 1  # anything", "y = n + 1")
    write_notebook(slow, "s: float = 60  # seconds", "s = 0")
    write_notebook(doomed, None, "x = 1")
    write_notebook(shaky, "marker: str = 'x'  # first attempt dies",
                   "import os, pathlib\nif not pathlib.Path(marker).exists():\n    pathlib.Path(marker).touch(); os._exit(1)\nx = 1  # edited")
    r = run_cli("batch", "--only-failed", result.run_id, "--out", folder/"second", "--name", "again", "--cold-kernels",
                "--cell-timeout", "20", "--timeout", "30", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    parent2, kids2 = runs_of(settings, batch_run_id(r.stdout))
    assert {n: k.data.tags["mlops_course.status"] for n, k in kids2.items()} == {"good-1": "reused", "good-2": "reused", "shaky": "ok",
                                                                                 "bad": "ok", "slow": "ok", "doomed": "ok"}
    assert kids2["good-2"].data.tags["mlops_course.reused_from"] == kids["good-2"].info.run_id
    assert kids2["good-2"].data.metrics == kids["good-2"].data.metrics and kids2["good-2"].data.params == kids["good-2"].data.params
    assert kids2["shaky"].data.tags["mlops_course.notebook_sha256"] != kids["shaky"].data.tags["mlops_course.notebook_sha256"]
    assert parent2.data.tags["mlops_course.only_failed"] == result.run_id and parent2.data.metrics["jobs_reused"] == 2
    assert (parent2.data.params["cell_timeout"], parent2.data.params["notebook_timeout"]) == ("20.0", "30.0")  # --cell-timeout, --timeout
    assert not (folder/"second"/"good-1").exists() and (folder/"second"/"shaky").exists()  # reused, not run again; edited, run again
    assert nothing_running(settings)


def test_bad_parameters_are_refused_before_anything_runs(setup):
    folder, settings, env = setup
    nb = write_notebook(folder/"descent.ipynb", *SWEEP)
    (folder/"typo.yaml").write_text("grid:\n  lr: [0.1]\n  stpes: [1, 2]\n")
    (folder/"key.yaml").write_text("grdi:\n  lr: [0.1]\n")
    cases = [(["-p", "learning_rate=0.1"], ["descent.ipynb", "'learning_rate'", "lr, steps"]),
             (["-p", "steps=many"], ["parameter steps = 'many'", "declares int"]),
             (["--grid", folder/"typo.yaml"], ["'stpes'", "lr, steps"]),
             (["--grid", folder/"key.yaml"], ["key.yaml", "grdi", "valid keys are: grid, sets"]),
             (["-p", "lr=0.1", "--workers", "0"], ["workers = 0"])]
    for args, fragments in cases:
        r = run_cli("batch", nb, "--out", folder/"out", *args, env=env)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        for f in fragments: assert f in r.stderr, (f, r.stderr)
    assert not (folder/"out").exists()
    client = MlflowClient(settings.tracking_uri)
    exp = client.get_experiment_by_name(settings.experiment)
    assert exp is None or client.search_runs([exp.experiment_id]) == []  # no batch run was even created
    raises(lambda: make_jobs([nb], [{"lr": float("nan")}]), "not a finite number")
    raises(lambda: run_batch([Job("a", nb, {"steps": 1.5})], settings=settings), "job 'a'", "declares int")
    raises(lambda: run_batch([Job("a", nb), Job("a", nb)], settings=settings), "unique", "a")


def test_ctrl_c_kills_the_kernels_and_leaves_no_run_running(setup):
    folder, settings, env = setup
    nb = write_notebook(folder/"sleepy.ipynb", "s: float = 120  # seconds",
                  "import os, time\nopen('pid.txt', 'w').write(str(os.getpid()))\ntime.sleep(s)")
    proc = subprocess.Popen([str(BIN/"mlops-course"), "batch", nb, "-p", "s=120", "--out", folder/"out", "--workers", "1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    pid_file = folder/"out"/"sleepy"/"pid.txt"
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline: time.sleep(0.2)
    assert pid_file.exists(), proc.kill() or proc.communicate()
    kernel = int(pid_file.read_text())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "killed" in out
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try: os.kill(kernel, 0); time.sleep(0.2)
        except ProcessLookupError: break
    else: pytest.fail("the kernel survived Ctrl-C")
    parent, kids = runs_of(settings, batch_run_id(out))
    assert parent.info.status == "KILLED" and kids["sleepy"].info.status == "KILLED"
    assert nothing_running(settings)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_batch_on_a_real_dask_cluster(setup):
    folder, settings, env = setup
    nb = write_notebook(folder/"descent.ipynb", *SWEEP)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask_env = dict(env)
    procs = [subprocess.Popen([str(BIN/"dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=dask_env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for i in range(2):
            procs.append(subprocess.Popen([str(BIN/"dask"), "worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                                           "--no-dashboard", "--name", f"w{i}"], env=dask_env, cwd=folder,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client
        with Client(address, timeout=60) as c:
            c.wait_for_workers(2, timeout=60)
            worker_pids = set(c.run(os.getpid).values())
        (folder/"grid.yaml").write_text("grid:\n  lr: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]\n  steps: [2]\n")
        r = run_cli("batch", nb, "--grid", folder/"grid.yaml", "--scheduler", address, "--out", folder/"out", "--name", "on-dask", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Dask cluster at " + address in r.stdout
        parent, kids = runs_of(settings, batch_run_id(r.stdout))
        assert parent.info.status == "FINISHED" and parent.data.params["scheduler"] == address and parent.data.metrics["jobs_ok"] == 6
        # every run recorded, with its metric, and run by the Dask worker processes (not by the batch's own)
        assert sorted(kids) == [f"descent-{i}" for i in range(1, 7)]
        for k in kids.values():
            lr, steps = float(k.data.params["lr"]), int(k.data.params["steps"])
            assert k.info.status == "FINISHED" and k.data.metrics["loss"] == pytest.approx(expected_loss(lr, steps))
            assert int(k.data.tags["mlops_course.worker"].split(":")[1]) in worker_pids
        assert nothing_running(settings)

        # Ctrl-C: Dask cannot stop a running task, so each worker is told to kill this batch's kernels; their runs end KILLED, and stay so
        sleepy = write_notebook(folder/"sleepy.ipynb", "s: float = 120  # seconds",
                                "import os, time\nopen('pid.txt', 'w').write(str(os.getpid()))\ntime.sleep(s)")
        (folder/"two.yaml").write_text("grid:\n  s: [120, 121]\n")
        proc = subprocess.Popen([str(BIN/"mlops-course"), "batch", sleepy, "--grid", folder/"two.yaml", "--scheduler", address, "--out", folder/"stop"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
        pid_files = [folder/"stop"/f"sleepy-{i}"/"pid.txt" for i in (1, 2)]
        deadline = time.monotonic() + 60
        while not all(f.exists() and f.read_text() for f in pid_files) and time.monotonic() < deadline: time.sleep(0.2)
        assert all(f.exists() for f in pid_files), proc.kill() or proc.communicate()
        kernels = [int(f.read_text()) for f in pid_files]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, out + err
        deadline = time.monotonic() + 10
        while any(psutil.pid_exists(k) and psutil.Process(k).status() != psutil.STATUS_ZOMBIE for k in kernels) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(psutil.pid_exists(k) and psutil.Process(k).status() != psutil.STATUS_ZOMBIE for k in kernels), "a kernel survived Ctrl-C on a Dask worker"
        parent, kids = runs_of(settings, batch_run_id(out))
        time.sleep(1)  # what a worker would write late, it would have written by now
        _, kids = runs_of(settings, parent.info.run_id)
        assert parent.info.status == "KILLED"
        assert {n: (k.info.status, k.data.tags.get("mlops_course.status")) for n, k in kids.items()} == {
            "sleepy-1": ("KILLED", "killed"), "sleepy-2": ("KILLED", "killed")}
        assert nothing_running(settings)
    finally:
        for p in reversed(procs): p.terminate()
        for p in procs:
            try: p.wait(15)
            except subprocess.TimeoutExpired: p.kill(); p.wait()
