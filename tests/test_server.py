"The classroom tracking server: the real `mlops-course server` on a real PostgreSQL, many writers at once, a clean stop."
import configparser
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from mlops_course.config import SERVER_DEFAULTS, SERVER_SECTION
from mlops_course.server import free_port, local_postgres, postgres_bin_dir
from mlops_course.notebooks import write_notebook
from conftest import BIN, ROOT, run_cli, sigint_default

needs_postgres = pytest.mark.skipif(postgres_bin_dir() is None, reason="PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
                                    "apt-get install postgresql (CI's .ci/run does)")

# a student's process: N runs, each with a parameter, a metric and an artifact uploaded through the server
WRITER = r'''
import sys, mlflow
from mlops_course.tracking import use_experiment
name, n = sys.argv[1], int(sys.argv[2])
use_experiment("classroom-writers")  # both students create it at the same moment
for i in range(n):
    with mlflow.start_run(run_name=f"{name}-{i}"):
        mlflow.set_tag("student", name)
        mlflow.log_param("i", i)
        mlflow.log_metric("score", i / 10)
        mlflow.log_text(f"{name} {i}", "note.txt")
'''

STUDENTS, RUNS_EACH = ("ana", "bruno", "carla", "davi"), 5  # all four create the experiment at the same moment

SWEEP = ("x: int = 1  # the swept parameter",
         "from mlops_course.pipeline import log_metrics, log_text\nlog_metrics(square=x * x)\nlog_text(f'x = {x}', 'note.txt')")


def clean_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_COURSE_", "MLFLOW_", "PG"))}
    env.update(MLOPS_COURSE_WORK_DIR=str(tmp_path/"work"), MLFLOW_DISABLE_TELEMETRY="true", **extra)
    return env


def wait_healthy(url, proc, timeout=150):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the server command exited with {proc.returncode}:\n{proc.stdout.read()}"
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200: return
        except OSError: time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def tree(pid):
    "The process and all its descendants (psutil.Process objects); none if it is gone."
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess: return []


def alive(procs):
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE: left.append(p)
        except psutil.NoSuchProcess: pass
    return left


def listening(process):
    "The TCP sockets a process listens on (psutil.Process.net_connections, or connections before psutil 6)."
    try: conns = (getattr(process, "net_connections", None) or process.connections)(kind="tcp")
    except psutil.Error: return []
    return [c for c in conns if c.status == psutil.CONN_LISTEN]


def postgres_processes(folder):
    "Processes of the PostgreSQL cluster in `folder` (its postmaster names the data folder)."
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(folder) in a for a in p.info["cmdline"] or []): found.append(p)
        except psutil.Error: pass
    return alive(found)


def test_settings_ini_documents_every_server_key():
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(ROOT/"settings.ini")
    assert list(cp[SERVER_SECTION]) == list(SERVER_DEFAULTS)


def test_a_taken_port_and_an_unreachable_database_are_one_clear_line(tmp_path):
    import socket
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0)); holder.listen()
        port = holder.getsockname()[1]
        r = run_cli("server", "--port", port, "--backend-store-uri", "postgresql://mlflow:hunter2@127.0.0.1:9/mlflow", env=clean_env(tmp_path), timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
    assert f"port {port} on 127.0.0.1 is already taken" in r.stderr
    nobody = free_port()
    r = run_cli("server", "--port", free_port(), env=clean_env(tmp_path, MLOPS_COURSE_SERVER_BACKEND_STORE_URI=f"postgresql://mlflow:hunter2@127.0.0.1:{nobody}/mlflow"), timeout=60)
    assert r.returncode == 2 and f"cannot reach PostgreSQL at 127.0.0.1:{nobody}" in r.stderr
    assert "hunter2" not in r.stderr + r.stdout and "mlflow:***@" in r.stderr
    assert not (tmp_path/"work"/"server-artifacts").exists()  # nothing started, nothing made


@needs_postgres
def test_many_writers_at_once_on_postgres_nothing_lost_nothing_left(tmp_path):
    "A real PostgreSQL, the real `mlops-course server` on it, a batch with 3 workers and 4 student processes writing at once."
    from mlflow.tracking import MlflowClient
    pg = local_postgres()
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        password = pg.uri.split(":")[2].split("@")[0]
        # the instructor's way: the URI in settings (here its environment variable), the password in PGPASSWORD
        env = clean_env(tmp_path, MLOPS_COURSE_SERVER_BACKEND_STORE_URI=pg.uri.replace(f":{password}@", "@"), PGPASSWORD=password,
                        MLOPS_COURSE_SERVER_PORT=str(port), MLOPS_COURSE_SERVER_ARTIFACTS_DIR=str(tmp_path/"artifacts"))
        server = subprocess.Popen([str(BIN/"mlops-course"), "server", "--workers", "2"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_healthy(url, server)
            processes = tree(server.pid)
            assert len(processes) >= 3  # the command, mlflow server, its web workers...
            # started with the default host: it listens on the loopback address only, not on the machine's other interfaces
            sockets = [c for p in processes for c in listening(p) if c.laddr.port == port]
            assert sockets and {c.laddr.ip for c in sockets} == {"127.0.0.1"}, sockets
            for p in processes:  # the password is in no command line (`ps` shows those to every user)
                assert not any(password in a for a in p.cmdline())

            student_env = {k: v for k, v in env.items() if not k.startswith(("MLOPS_COURSE_SERVER_", "PG"))}
            student_env["MLFLOW_TRACKING_URI"] = url
            student_env["MLOPS_COURSE_EXPERIMENT"] = "classroom-batch"
            writers = [subprocess.Popen([sys.executable, "-c", WRITER, name, str(RUNS_EACH)], env=student_env, cwd=tmp_path,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in STUDENTS]
            write_notebook(tmp_path/"sweep.ipynb", *SWEEP)
            (tmp_path/"grid.yaml").write_text("grid:\n  x: [1, 2, 3, 4, 5, 6, 7, 8]\n")
            batch = run_cli("batch", tmp_path/"sweep.ipynb", "--grid", tmp_path/"grid.yaml", "--workers", "3", "--out", tmp_path/"batch",
                            env=student_env, timeout=300)
            assert batch.returncode == 0, batch.stdout[-3000:] + batch.stderr[-3000:]
            for w in writers:
                out, _ = w.communicate(timeout=180)
                assert w.returncode == 0, out[-3000:]

            client = MlflowClient(url)
            runs = client.search_runs([client.get_experiment_by_name("classroom-writers").experiment_id], max_results=1000)
            assert sorted(r.info.run_name for r in runs) == sorted(f"{n}-{i}" for n in STUDENTS for i in range(RUNS_EACH))  # zero lost
            assert {r.info.status for r in runs} == {"FINISHED"}  # zero stuck in RUNNING
            assert client.search_runs(["0"]) == []  # none went astray to the Default experiment
            assert all(r.data.metrics["score"] == int(r.data.params["i"]) / 10 for r in runs)
            notes = sorted(p.read_text() for p in (tmp_path/"artifacts").rglob("note.txt"))
            expected = [f"{n} {i}" for n in STUDENTS for i in range(RUNS_EACH)] + [f"x = {x}" for x in range(1, 9)]
            assert notes == sorted(expected)  # the writers' and the batch's, uploaded through the server, to its folder
            exp = client.get_experiment_by_name("classroom-batch").experiment_id
            runs = client.search_runs([exp], max_results=1000)
            parents = [r for r in runs if r.data.tags.get("mlops_course.kind") == "batch"]
            jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
            assert len(parents) == 1 and len(jobs) == 8 and len(runs) == 9
            assert {r.info.status for r in runs} == {"FINISHED"}
            assert sorted(int(r.data.params["x"]) for r in jobs) == list(range(1, 9))
            assert all(r.data.metrics["square"] == int(r.data.params["x"]) ** 2 for r in jobs)
            with tempfile.TemporaryDirectory() as d:  # each job's executed notebook is readable through the server
                got = client.download_artifacts(jobs[0].info.run_id, "notebook", d)
                assert any(p.suffix == ".ipynb" for p in Path(got).iterdir())
            batch_artifacts_on_server = len(list((tmp_path/"artifacts").rglob("sweep-*.ipynb"))) == 8
        finally:
            processes = tree(server.pid)  # everything it runs now
            server.send_signal(signal.SIGTERM)  # as `kill` or a service manager stops it
            out, _ = server.communicate(timeout=60)
        assert server.returncode == 0, out[-3000:]
        assert "MLflow tracking server on" in out and "students" in out.lower() and "Stopped the server." in out
        deadline = time.time() + 10
        while alive(processes) and time.time() < deadline: time.sleep(0.2)
        assert alive(processes) == []  # no mlflow process left
        with pytest.raises(OSError): urllib.request.urlopen(url + "/health", timeout=2)
    finally:
        pg.stop()
    assert postgres_processes(pg.folder) == [] and not pg.folder.exists()
    assert batch_artifacts_on_server  # the batch's executed notebooks went through the server, to its folder


@needs_postgres
def test_local_postgres_option_starts_and_stops_both_on_ctrl_c(tmp_path):
    "`mlops-course server --local-postgres DIR`: a private PostgreSQL made in DIR, the server on it; Ctrl-C stops both, the data stays."
    from mlflow.tracking import MlflowClient
    folder = Path(tempfile.mkdtemp(prefix="mlops-course-test-pg-"))
    folder.chmod(0o755)  # as root, PostgreSQL runs as the postgres user, who must be able to enter it
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = clean_env(tmp_path)
        server = subprocess.Popen([str(BIN/"mlops-course"), "server", "--local-postgres", str(folder/"db"), "--port", str(port), "--workers", "1",
                                   "--artifacts-dir", str(tmp_path/"artifacts")], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=sigint_default)
        try:
            wait_healthy(url, server)
            client = MlflowClient(url)
            run = client.create_run(client.create_experiment("kept"))
            client.log_metric(run.info.run_id, "m", 1.0)
            client.set_terminated(run.info.run_id)
            assert postgres_processes(folder/"db")
        finally:
            processes = tree(server.pid)
            server.send_signal(signal.SIGINT)  # Ctrl-C
            out, _ = server.communicate(timeout=60)
        assert server.returncode == 0, out[-3000:]
        assert "PostgreSQL on 127.0.0.1:" in out and "Stopped the server and PostgreSQL." in out
        deadline = time.time() + 10
        while (alive(processes) or postgres_processes(folder/"db")) and time.time() < deadline: time.sleep(0.2)
        assert alive(processes) == [] and postgres_processes(folder/"db") == []
        assert (folder/"db"/"data"/"PG_VERSION").exists()  # the class's data stays for next time
        with local_postgres(folder/"db") as pg:  # and it is there: started again, same user, same run
            import psycopg2
            c = psycopg2.connect(pg.uri)
            try:
                with c.cursor() as cur:
                    cur.execute("SELECT count(*) FROM runs WHERE status = 'FINISHED'")
                    assert cur.fetchone()[0] == 1
            finally: c.close()
    finally:
        import shutil
        shutil.rmtree(folder, ignore_errors=True)
