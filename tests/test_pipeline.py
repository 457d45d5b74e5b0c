"The pipeline runner with real kernels and a real MLflow store, read back through MlflowClient."
import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest
from mlflow.tracking import MlflowClient

from mlops_course.config import load_settings
from mlops_course.core import WorkbenchError, file_sha256
from mlops_course.versioning import run_data_versions
from mlops_course.pipeline import load_spec, run_pipeline
from mlops_course.notebooks import write_notebook
from conftest import BIN, ROOT, run_cli, sigint_default

NOTEBOOKS = {
    "make": ('n: int = 5  # how many\nout_path: str = "numbers.txt"  # output',
             "from mlops_course.pipeline import data_path, log_metrics\n"
             "data_path(out_path).write_text(' '.join(map(str, range(n))))\nlog_metrics(count=n)"),
    "total": ('numbers_path: str = "numbers.txt"  # input\ntotal_path: str = "total.txt"  # output\nscale: float = 1.0  # factor',
              "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
              "from mlops_course.pipeline import data_path, log_figure, log_metrics\n"
              "total = scale * sum(map(int, data_path(numbers_path).read_text().split()))\n"
              "data_path(total_path).write_text(str(total))\nlog_metrics(total=total)\n"
              "fig, ax = plt.subplots(); ax.bar([0], [total]); log_figure(fig, 'total.png')"),
    "gate": ('flag_path: str = "flag.txt"  # says ok or fail\nnumbers_path: str = "numbers.txt"  # input',
             "from mlops_course.pipeline import data_path\n"
             "assert data_path(flag_path).read_text().strip() == 'ok', 'the flag says fail'"),
    "echo": ('value: str = ""  # anything\nvalue_path: str = "echo.txt"  # output',
             "from mlops_course.pipeline import data_path\ndata_path(value_path).write_text(repr(value))"),
    "sleep": ('seconds: float = 60  # how long', "import time\ntime.sleep(seconds)"),
    "die": ('why: str = "test"  # unused', "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
    "lazy": ('out_path: str = "never.txt"  # declared, never written', "x = 1"),
}


@pytest.fixture
def demo(tmp_path):
    for name, (params, body) in NOTEBOOKS.items(): write_notebook(tmp_path/f"{name}.ipynb", params, body)
    (tmp_path/"flag.txt").write_text("ok")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_COURSE_") and k != "MLFLOW_TRACKING_URI"}
    env["MLOPS_COURSE_WORK_DIR"] = str(tmp_path/"work")
    settings = load_settings(env=env)
    return tmp_path, settings, env


def write_spec(folder, text, name="spec.yaml"):
    (folder/name).write_text(text)
    return folder/name


CHAIN = """
name: chain
steps:
  make: {notebook: make.ipynb, env: data, parameters: {n: 4}, outputs: {out_path: numbers.txt}}
  total: {notebook: total.ipynb, parameters: {scale: 2}, inputs: {numbers_path: numbers.txt}, outputs: {total_path: total.txt}}
  gate: {notebook: gate.ipynb, env: preprod, inputs: {flag_path: flag.txt, numbers_path: numbers.txt}}
"""


def children(client, parent_id):
    runs = client.search_runs([client.get_run(parent_id).info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.data.tags["mlops_course.step"]: r for r in runs}


def no_run_left_running(settings):
    client = MlflowClient(settings.tracking_uri)
    exp = client.get_experiment_by_name(settings.experiment)
    return client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'") == []


def test_runs_params_metrics_artifacts_and_data_versions(demo):
    folder, settings, _ = demo
    result = run_pipeline(write_spec(folder, CHAIN), settings=settings)
    assert result.status == "ok", [(r.name, r.error) for r in result.steps]
    client = MlflowClient(settings.tracking_uri)
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["mlops_course.kind"] == "pipeline"
    assert parent.data.metrics["steps_ok"] == 3
    steps = children(client, result.run_id)
    assert set(steps) == {"make", "total", "gate"} and all(r.info.status == "FINISHED" for r in steps.values())
    total = steps["total"]
    assert total.data.params["scale"] == "2" and total.data.metrics["total"] == 12.0
    assert total.data.tags["mlops_course.env"] == "dev" and steps["gate"].data.tags["mlops_course.env"] == "preprod"
    numbers, out = result.spec.steps["make"].outputs["out_path"], result.spec.steps["total"].outputs["total_path"]
    assert total.data.tags["data.input.numbers_path.sha256"] == file_sha256(numbers)
    assert total.data.tags["data.output.total_path.sha256"] == file_sha256(out)
    assert steps["gate"].data.tags["data.input.flag_path.sha256"] == file_sha256(folder/"flag.txt")
    versions = run_data_versions(total).set_index("name")  # the same versions as MLflow dataset inputs, with their paths
    assert versions.loc["numbers_path", ["direction", "sha256", "path"]].tolist() == ["input", file_sha256(numbers), str(numbers)]
    assert versions.loc["total_path", ["direction", "sha256", "path"]].tolist() == ["output", file_sha256(out), str(out)]
    arts = {a.path for a in client.list_artifacts(total.info.run_id, "notebook")} | {a.path for a in client.list_artifacts(total.info.run_id, "figures")}
    assert arts == {"notebook/total.ipynb", "notebook/total.html", "figures/total.png"}
    assert "mlops_course.version" in total.data.tags
    report = result.report.read_text()
    assert result.report.is_file() and "total.png" in report and "data:image/png;base64" in report
    assert any(a.path == "report.html" for a in client.list_artifacts(result.run_id))


def test_cached_rerun_and_resume_after_failure(demo):
    folder, settings, _ = demo
    spec = write_spec(folder, CHAIN)
    (folder/"flag.txt").write_text("fail")
    first = run_pipeline(spec, settings=settings)
    by = {r.name: r for r in first.steps}
    assert first.status == "failed" and by["gate"].status == "failed" and "the flag says fail" in by["gate"].error
    assert by["gate"].cell == 3  # In [1] parameters, In [2] injected by papermill, In [3] the assert
    client = MlflowClient(settings.tracking_uri)
    assert client.get_run(by["gate"].run_id).info.status == "FAILED" and client.get_run(first.run_id).info.status == "FAILED"
    failed_nb = nbformat.read(by["gate"].notebook, as_version=4)
    assert any(o.get("ename") == "AssertionError" for c in failed_nb.cells if c.cell_type == "code" for o in c.outputs)

    (folder/"flag.txt").write_text("ok")
    second = run_pipeline(spec, settings=settings)
    status = {r.name: r.status for r in second.steps}
    assert status == {"make": "cached", "total": "cached", "gate": "ok"}
    made = {r.name: r for r in first.steps}["make"]
    cached_run = children(client, second.run_id)["make"]
    assert cached_run.data.tags["mlops_course.cached"] == "true" and cached_run.data.tags["mlops_course.source_run_id"] == made.run_id

    third = run_pipeline(spec, settings=settings)
    assert third.status == "up-to-date" and third.run_id is None

    changed = run_pipeline(spec, ["total.scale=3"], settings=settings)
    assert {r.name: r.status for r in changed.steps} == {"make": "cached", "total": "ok", "gate": "cached"}
    assert {r.name: r.status for r in run_pipeline(spec, ["total.scale=3"], settings=settings, from_step="total").steps} == \
        {"make": "cached", "total": "ok", "gate": "cached"}
    assert {r.status for r in run_pipeline(spec, ["total.scale=3"], settings=settings, force=True).steps} == {"ok"}
    # an output changed behind the runner's back is not reused
    result_file = changed.spec.steps["total"].outputs["total_path"]
    result_file.write_text("tampered")
    assert {r.name: r.status for r in run_pipeline(spec, ["total.scale=3"], settings=settings).steps}["total"] == "ok"
    assert float(result_file.read_text()) == 18.0
    assert no_run_left_running(settings)


def test_a_step_must_write_its_declared_outputs_in_this_run(demo):
    folder, settings, _ = demo
    spec = write_spec(folder, "steps:\n  lazy: {notebook: lazy.ipynb, outputs: {out_path: never.txt}}\n")
    result = run_pipeline(spec, settings=settings)
    assert result.status == "failed" and "did not write its output(s) in this run: out_path" in result.steps[0].error
    old = result.spec.steps["lazy"].outputs["out_path"]
    old.write_text("left by an earlier run")
    os.utime(old, (time.time() - 60, time.time() - 60))
    again = run_pipeline(spec, settings=settings)
    assert again.status == "failed" and "in this run" in again.steps[0].error  # an old file is not this run's product


def test_a_cache_whose_runs_are_gone_from_the_store_runs_again(demo):
    folder, settings, env = demo
    spec = write_spec(folder, CHAIN)
    assert run_pipeline(spec, settings=settings).status == "ok"
    # the same work dir (data, cache index) but another tracking store, where the runs that made the outputs are not
    other = load_settings(env={**env, "MLOPS_COURSE_TRACKING_URI": f"sqlite:///{folder/'other.db'}"})
    again = run_pipeline(spec, ["total.scale=5"], settings=other)  # something changed, so cached steps are checked
    assert {r.name: r.status for r in again.steps} == {"make": "ok", "total": "ok", "gate": "ok"}


def test_one_run_of_a_pipeline_at_a_time(demo):
    from mlops_course.pipeline import _lock
    folder, settings, _ = demo
    spec = load_spec(write_spec(folder, CHAIN), settings=settings)
    held = _lock(spec)
    try:
        with pytest.raises(WorkbenchError, match="already running in another process"):
            run_pipeline(spec, settings=settings, force=True)
    finally: held.close()
    assert run_pipeline(spec, settings=settings).status == "ok"


def test_timeout_and_dead_kernel_fail_their_step(demo):
    folder, settings, _ = demo
    spec = write_spec(folder, "steps:\n  slow: {notebook: sleep.ipynb, timeout: 2}\n  crash: {notebook: die.ipynb}\n")
    result = run_pipeline(spec, settings=settings, workers=2)
    by = {r.name: r for r in result.steps}
    assert by["slow"].status == "failed" and "Timeout" in by["slow"].error
    assert by["crash"].status == "failed" and "DeadKernel" in by["crash"].error
    client = MlflowClient(settings.tracking_uri)
    assert {r.info.status for r in children(client, result.run_id).values()} == {"FAILED"}
    assert no_run_left_running(settings)


def test_independent_steps_run_in_parallel(demo):
    folder, settings, _ = demo
    spec = write_spec(folder, "steps:\n  a: {notebook: sleep.ipynb, parameters: {seconds: 3}}\n  b: {notebook: sleep.ipynb, parameters: {seconds: 3}}\n")
    result = run_pipeline(spec, settings=settings, workers=2)
    runs = children(MlflowClient(settings.tracking_uri), result.run_id)
    a, b = runs["a"].info, runs["b"].info
    assert a.start_time < b.end_time and b.start_time < a.end_time, "the two steps did not overlap"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_ends_every_run_as_killed(demo, sig):
    folder, settings, env = demo
    spec = write_spec(folder, "steps:\n  nap: {notebook: sleep.ipynb, parameters: {seconds: 120}}\n  after: {notebook: echo.ipynb, upstream: [nap], outputs: {value_path: v.txt}}\n")
    # as at a terminal: a suite started in the background (`make test &`) inherits SIGINT ignored, and so would the runner
    proc = subprocess.Popen([str(BIN/"mlops-course"), "run", str(spec)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=sigint_default)
    deadline = time.time() + 60
    while not list((settings.work_dir/"pipelines").rglob("nap/nap.ipynb")) and time.time() < deadline: time.sleep(0.2)
    time.sleep(3)  # the kernel is running the 120 s cell now
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    client = MlflowClient(settings.tracking_uri)
    exp = client.get_experiment_by_name(settings.experiment)
    runs = client.search_runs([exp.experiment_id])
    assert {r.data.tags.get("mlops_course.step", "parent"): r.info.status for r in runs} == {"parent": "KILLED", "nap": "KILLED"}
    assert "after" in out and "skipped" in out


def test_parameters_are_data_never_code(demo):
    folder, settings, env = demo
    spec = write_spec(folder, "steps:\n  echo: {notebook: echo.ipynb, outputs: {value_path: echo.txt}}\n")
    hostile = '"; import os; open("pwned", "w").close() #\\\'\'\'\n__import__("os")'
    r = run_cli("run", spec, "-p", f"echo.value={hostile}", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    written = (settings.work_dir/"pipelines/spec/data/echo.txt").read_text()
    assert eval(written) == hostile  # the kernel received exactly the string, as data
    assert not list(settings.work_dir.rglob("pwned")) and not (ROOT/"pwned").exists()


def test_bad_parameters_are_refused_before_anything_runs(demo):
    folder, settings, env = demo
    spec = write_spec(folder, CHAIN)
    cases = {("-p", "total.rows=3"): "parameter 'rows' is not declared by total.ipynb; it declares: numbers_path, total_path, scale",
             ("-p", "total.scale;import os=1"): "is not a Python identifier",
             ("-p", "totl.scale=1"): "no step 'totl'; steps are: make, total, gate",
             ("--from", "nope"): "no such step; steps are: make, total, gate",
             ("--to", "nope"): "--to nope: no such step; steps are: make, total, gate",
             ("--from", "gate", "--to", "total"): "total does not depend on gate; it needs: make, total"}
    for args, expected in cases.items():
        r = run_cli("run", spec, *args, env=env)
        assert r.returncode == 2 and expected in r.stderr, (args, r.stderr)
    assert not (settings.work_dir/"mlflow.db").exists()  # nothing ran, not even the store was created


def test_spec_errors_name_what_is_wrong(demo):
    folder, settings, _ = demo
    cases = {
        "steps:\n  a: {notebook: make.ipynb, outputs: {out_path: x.txt}, upstream: [b]}\n  b: {notebook: total.ipynb, inputs: {numbers_path: x.txt}, outputs: {total_path: y.txt}}\n": "cycle: a -> b -> a",
        "steps:\n  a: {notebook: make.ipynb, upstream: [ingest]}\n": "unknown upstream step 'ingest'; steps are: a",
        "steps:\n  a: {notebook: missing.ipynb}\n": "missing.ipynb' does not exist",
    }
    for text, expected in cases.items():
        with pytest.raises(WorkbenchError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            load_spec(write_spec(folder, text, "bad.yaml"), settings=settings)


def test_a_tracking_server_works_too(demo):
    "The same pipeline recorded through a real MLflow tracking server on 127.0.0.1 (HTTP), not a file."
    import socket
    import urllib.request
    folder, _, env = demo
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{folder/'server.db'}", "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try: urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2); break
            except OSError: time.sleep(1)
        settings = load_settings(env={**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
        result = run_pipeline(write_spec(folder, CHAIN), settings=settings)
        assert result.status == "ok", [(r.name, r.error) for r in result.steps]
        client = MlflowClient(f"http://127.0.0.1:{port}")
        steps = children(client, result.run_id)
        assert steps["total"].data.metrics["total"] == 12.0 and client.get_run(result.run_id).info.status == "FINISHED"
    finally:
        os.killpg(server.pid, signal.SIGTERM); server.wait(timeout=30)
