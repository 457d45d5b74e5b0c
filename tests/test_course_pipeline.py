"The course's MLOps pipeline, run as a user runs it: from the command line, on the embedded store."
import json
import socket
import subprocess
import time
import urllib.request

import pandas as pd
import papermill as pm
import pytest
from mlflow.tracking import MlflowClient

from mlops_course.config import load_settings
from mlops_course.core import file_sha256
from mlops_course.data import make_churn, write_table
from mlops_course.notebooks import execute_notebook
from mlops_course.pipeline import load_spec, notebook_parameters
from mlops_course.registry import lineage, training_data
from mlops_course.versioning import plot_lineage
from conftest import BIN, ROOT, run_cli

PIPELINE = ROOT/"nbs"/"pipeline"
STEPS = ["ingest", "validate", "prepare", "train", "evaluate", "register", "gate", "deploy", "monitor"]
SMALL = ["-p", "ingest.n_rows=4000", "-p", "train.n_iter=3"]


def test_papermill_reads_the_same_parameters_we_do():
    "Every step notebook's parameters cell parses for papermill (--help-notebook) exactly as for the runner, with help text."
    for name in STEPS:
        ours = notebook_parameters(PIPELINE/f"{name}.ipynb")
        theirs = pm.inspect_notebook(str(PIPELINE/f"{name}.ipynb"))
        assert list(ours) == list(theirs), name
        assert all(p["help"] for p in theirs.values()), f"{name}: a parameter has no help comment"


def test_course_spec_covers_the_environments():
    spec = load_spec(ROOT/"nbs/pipeline/course.yaml", settings=load_settings(env={"MLOPS_COURSE_WORK_DIR": "/tmp/unused-mlops"}, create_work_dir=False))
    assert list(spec.steps) == STEPS
    assert [spec.steps[s].env for s in STEPS] == ["data", "data", "dev", "dev", "dev", "preprod", "preprod", "prod", "prod"]


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    "The course pipeline run once from the command line, as `make run` does (smaller data)."
    import os
    work = tmp_path_factory.mktemp("course")/"work"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_COURSE_") and k != "MLFLOW_TRACKING_URI"}
    env["MLOPS_COURSE_WORK_DIR"] = str(work)
    r = run_cli("run", *SMALL, "-p", "gate.min_score=0.0", env=env)
    return r, env, load_settings(env=env)


def test_course_pipeline_runs_and_registers_a_candidate(course):
    r, env, settings = course
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Pipeline ok" in r.stdout and "Report: " in r.stdout
    client = MlflowClient(settings.tracking_uri)
    candidate = client.get_model_version_by_alias("churn-model", "candidate")
    preprod = client.get_model_version_by_alias("churn-model", "preprod")
    assert candidate.version == preprod.version
    assert candidate.tags["gate.decision"] == "promote" and "no model in production yet" in candidate.tags["gate.reason"]
    assert float(candidate.tags["test_f1"]) > 0
    data = settings.work_dir/"pipelines/course/data"
    decision = json.loads((data/"gate.json").read_text())
    assert decision["decision"] == "promote" and decision["version"] == str(candidate.version)
    # deploy: the promoted version serves, and scored the production batch
    assert client.get_model_version_by_alias("churn-model", "prod").version == candidate.version
    assert json.loads((data/"deployment.json").read_text())["version"] == str(candidate.version)
    predictions, labels = pd.read_parquet(data/"predictions.parquet"), pd.read_parquet(data/"labels.parquet")
    assert len(predictions) == len(labels) == 5000 and set(predictions["prediction"].unique()) <= {0, 1}
    assert (predictions["customer_id"].to_numpy() == labels["customer_id"].to_numpy()).all()
    # monitor: same world as training, so no retraining
    monitored = json.loads((data/"monitor.json").read_text())
    assert monitored["retrain"] is False, monitored


def test_lineage_says_which_data_trained_the_production_model(course):
    _, env, settings = course
    data = settings.work_dir/"pipelines/course/data"
    trained_on = training_data("churn-model", "prod", settings.tracking_uri).set_index("name")
    assert trained_on.loc["train_path", "sha256"] == file_sha256(data/"train.parquet")
    assert trained_on.loc["raw_path", "written_by"] == "ingest"
    lin = lineage("churn-model", alias="prod", tracking_uri=settings.tracking_uri)
    assert list(lin.steps.step) == ["ingest", "validate", "prepare", "train", "evaluate", "register"]
    assert ("train", "evaluate") in lin.edges and "deploy" not in set(lin.steps.step)
    prod = lin.deployments.set_index("alias").loc["prod"]  # ... and where that version is deployed, since when
    assert prod.promoted_at and json.loads((data/"deployment.json").read_text())["version"] == lin.version
    ingest = lin.data[(lin.data.step == "ingest") & (lin.data.direction == "output")].iloc[0]
    assert ingest["rows"] == len(pd.read_parquet(data/"raw.parquet")) and ingest["digest"] == ingest["sha256"][:32]
    fig = plot_lineage(lin)
    labels = [t.get_text().split("\n")[0] for t in fig.axes[0].texts if t.get_text()]
    assert labels[labels.index("churn-model") + 1:] == [f"@{a}" for a in lin.aliases] and "prod" in lin.aliases and "train.parquet" in labels


def test_model_card_and_risk_checklist_read_the_pipelines_record(course):
    "The model the pipeline registered gets its card and checklist from the pipeline's own record: version tags, step runs, data versions."
    from mlflow.artifacts import download_artifacts
    from mlops_course.reports import model_card, risk_checklist
    _, env, settings = course
    uri, data = settings.tracking_uri, settings.work_dir/"pipelines/course/data"
    prod = MlflowClient(uri).get_model_version_by_alias("churn-model", "prod")
    assert prod.description.startswith("Which customers will cancel") and "held-out rows" in prod.description
    card = model_card("churn-model", alias="prod", tracking_uri=uri)
    assert card.run_id == prod.run_id and card.metrics["recall"] == float(prod.tags["test_recall"])
    assert card.how_well[0].startswith("It finds about") and "customers who will leave" in card.how_well[0]
    assert card.objective.startswith("f1 (") and card.gate.startswith("promoted")
    roles = card.data.set_index("role")
    assert roles.loc["trained on", "sha256"] == file_sha256(data/"train.parquet") and roles.loc["trained on", "step"] == "train"
    assert roles.loc["tested on", "sha256"] == file_sha256(data/"test.parquet") and roles.loc["source", "step"] == "ingest"
    logged = download_artifacts(run_id=prod.run_id, artifact_path="reports/model_card.html", tracking_uri=uri)  # by register, again by gate
    assert "Quality gate: promoted" in open(logged, encoding="utf-8").read()
    def age(rows): return pd.cut(rows["age"], [18, 45, 91], right=False, labels=["18-44", "45+"]).rename("age band")
    checklist = risk_checklist("churn-model", group=age, alias="prod", tracking_uri=uri)  # data, test and drift from the record
    items = checklist.items.set_index("item")
    assert items.loc["data contract", "status"] == "pass" and "step 'validate'" in items.loc["data contract", "evidence"]
    assert items.loc["data version", "status"] == "pass" and items.loc["reproducibility", "status"] == "pass", items.evidence.tolist()
    assert "test_* tags" in items.loc["reproducibility", "evidence"] and "seed 42" in items.loc["reproducibility", "evidence"]
    assert items.loc["drift", "status"] in ("pass", "warn") and "step 'monitor'" in items.loc["drift", "evidence"]
    assert checklist.fairness["rows"].sum() == len(pd.read_parquet(data/"test.parquet"))
    changed = risk_checklist("churn-model", pd.read_parquet(data/"train.parquet").iloc[1:], group="region", alias="prod", tracking_uri=uri)
    assert changed.items.set_index("item").loc["data version", "status"] == "fail"  # the data changed since training: the record says so


def test_the_production_model_answers_curl(course):
    _, env, settings = course
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    proc = subprocess.Popen([str(BIN/"mlops-course"), "serve", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        rows = pd.read_parquet(settings.work_dir/"pipelines/course/data/batch.parquet").head(5).drop(columns="customer_id")
        body = json.dumps({"rows": json.loads(rows.to_json(orient="records"))})
        answer, deadline = None, time.time() + 90
        while time.time() < deadline and answer is None:
            r = subprocess.run(["curl", "-s", "-X", "POST", "-H", "Content-Type: application/json", "-d", body,
                                f"http://127.0.0.1:{port}/predict"], capture_output=True, text=True)
            if r.returncode == 0 and r.stdout: answer = json.loads(r.stdout)
            else: time.sleep(1)
        assert answer is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        prod = MlflowClient(settings.tracking_uri).get_model_version_by_alias("churn-model", "prod").version
        assert answer["version"] == str(prod) and len(answer["predictions"]) == 5
    finally:
        proc.terminate(); proc.wait(timeout=30)


def test_rerun_is_up_to_date_and_status_lists_runs(course):
    _, env, _ = course
    r = run_cli("run", *SMALL, "-p", "gate.min_score=0.0", env=env)
    assert r.returncode == 0 and "Up to date" in r.stdout and r.stdout.count("cached") >= len(STEPS)
    r = run_cli("status", env=env)
    assert r.returncode == 0 and "course pipeline" in r.stdout and "FINISHED" in r.stdout


def test_gate_refuses_a_worse_candidate_and_says_why(course):
    _, env, settings = course
    client = MlflowClient(settings.tracking_uri)
    first = client.get_model_version_by_alias("churn-model", "candidate").version
    assert client.get_model_version_by_alias("churn-model", "prod").version == first  # the first run deployed it
    r = run_cli("run", *SMALL, "-p", "gate.min_score=0.0", "-p", "gate.tolerance=-0.5", "--from", "register", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    second = client.get_model_version_by_alias("churn-model", "candidate")
    assert int(second.version) == int(first) + 1
    assert second.tags["gate.decision"] == "refuse" and "worse than production" in second.tags["gate.reason"]
    assert client.get_model_version_by_alias("churn-model", "preprod").version == first  # not promoted
    assert client.get_model_version_by_alias("churn-model", "prod").version == first  # production keeps its model


def test_validate_blocks_a_corrupted_batch(course, tmp_path):
    "A broken batch stops at validate with its report: nothing downstream runs, and no model, alias or data version already made is harmed."
    _, env, settings = course
    client = MlflowClient(settings.tracking_uri)
    prod_before = client.get_model_version_by_alias("churn-model", "prod").version
    versions_before = {v.version for v in client.search_model_versions("name = 'churn-model'")}
    trained_before = training_data("churn-model", "prod", settings.tracking_uri)
    bad = make_churn(2000, seed=3)
    bad.loc[:9, "age"] = 250.0
    bad["contract"] = bad["contract"].cat.add_categories(["lifetime"])
    bad.loc[10:19, "contract"] = "lifetime"
    write_table(bad, tmp_path/"corrupted.csv")
    r = run_cli("run", *SMALL, "-p", f"ingest.source={tmp_path/'corrupted.csv'}", env=env)
    assert r.returncode == 1
    assert "DataContractError: data contract 'churn' broken" in r.stdout and "2 of 47 checks failed on 2,000 rows" in r.stdout
    assert "in_range(18, 90) on age (10 rows, e.g. 250)" in r.stdout and "on contract (10 rows, e.g. 'lifetime')" in r.stdout
    downstream = ["prepare", "train", "evaluate", "register", "gate", "deploy", "monitor"]
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("  ") and len(line.split()) > 2}
    assert "skipped: upstream step 'validate' failed" in lines["prepare"], lines["prepare"]
    for step in downstream[1:]: assert "skipped: upstream step" in lines[step], lines[step]
    # MLflow: the pipeline run FAILED, with runs for ingest and validate only; the failed validate run holds the report
    exp = client.get_experiment_by_name(settings.experiment)
    run = client.search_runs([exp.experiment_id], "attributes.run_name = 'validate' and attributes.status = 'FAILED'",
                             order_by=["attributes.start_time DESC"], max_results=1)[0]
    parent = run.data.tags["mlflow.parentRunId"]
    steps = {c.data.tags["mlops_course.step"]: c.info.status
             for c in client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")}
    assert steps == {"ingest": "FINISHED", "validate": "FAILED"} and client.get_run(parent).info.status == "FAILED"
    assert run.data.metrics["checks_failed"] == 2 and run.data.metrics["rows"] == 2000
    page = client.download_artifacts(run.info.run_id, "artifacts/contract_report.html", str(tmp_path))
    assert "&#x27;lifetime&#x27;" in open(page, encoding="utf-8").read()
    # nothing already made was harmed: the models, the production alias, and the data that trained production
    assert {v.version for v in client.search_model_versions("name = 'churn-model'")} == versions_before
    assert client.get_model_version_by_alias("churn-model", "prod").version == prod_before
    trained = training_data("churn-model", "prod", settings.tracking_uri)
    assert trained[["name", "sha256"]].equals(trained_before[["name", "sha256"]])
    raw = trained.set_index("name").loc["raw_path"]
    assert file_sha256(raw.path) != raw.sha256  # the corrupted batch's ingest overwrote raw.parquet in the work dir ...
    for row in trained.itertuples():  # ... and every version that trained production is still there, byte for byte
        assert file_sha256(row.stored) == row.sha256, row.name


def test_the_readme_gate_command_gates_the_course_run(course, tmp_path):
    "The README's CI gate, as written there, on the course run: exit 0 and a JUnit report; a stricter tolerance or a broken batch: exit 1."
    import re
    import xml.etree.ElementTree as ET
    _, env, settings = course
    block = re.search(r"```sh\n(mlops-course gate .*?)\n```", (ROOT/"README.md").read_text(), re.S).group(1)
    argv = block.replace("\\\n", " ").replace(".mlops-course/", f"{settings.work_dir}/").split()
    assert argv[:2] == ["mlops-course", "gate"] and "--junit" in argv
    r = subprocess.run([str(BIN/"mlops-course"), *argv[1:]], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    def junit() -> tuple[int, int]:
        suite = next(ET.parse(tmp_path/"gates.xml").getroot().iter("testsuite"))
        return int(suite.get("tests")), int(suite.get("failures"))
    tests, failures = junit()
    assert tests >= 2 and failures == 0  # the metric gate and the data contract gate
    strict = [a if a != "models:/churn-model@prod" else "0.99" for a in argv[1:]]  # a floor of F1 0.99 instead of production
    r = subprocess.run([str(BIN/"mlops-course"), *strict], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and junit()[1] >= 1, r.stdout + r.stderr


def test_a_partner_csv_in_another_dialect_is_told_what_to_pass_then_ingested(work_env, tmp_path):
    "A ';'-delimited latin-1 export through the real ingest step: the error says what to pass (the delimiter's message: test_validation); with both, ingest reads it right."
    partner = make_churn(1500, seed=5).astype({"region": str})
    partner.loc[7, "region"] = "São Paulo"
    partner.to_csv(tmp_path/"partner.csv", sep=";", index=False, encoding="latin-1")
    source = ["-p", f"ingest.source={tmp_path/'partner.csv'}"]
    first = run_cli("run", *source, "--to", "ingest", env=work_env)
    assert first.returncode == 1 and "is not utf-8 text (line 9" in first.stdout and "encoding='latin-1'" in first.stdout, first.stdout
    again = run_cli("run", *source, "-p", "ingest.encoding=latin-1", "-p", "ingest.sep=;", "--to", "ingest", env=work_env)
    assert again.returncode == 0 and "up to ingest" in again.stdout and "validate" not in again.stdout, again.stdout + again.stderr
    raw = pd.read_parquet(load_settings(env=work_env).work_dir/"pipelines/course/data/raw.parquet")
    assert len(raw) == 1500 and raw.loc[7, "region"] == "São Paulo" and raw.shape[1] == partner.shape[1]


def test_ui_serves_the_store_on_loopback(course):
    _, env, settings = course
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    before = mlflow_processes()
    proc = subprocess.Popen([str(BIN/"mlops-course"), "ui", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body, deadline = None, time.time() + 90
        while time.time() < deadline and body is None:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name={settings.experiment}")
                body = json.loads(urllib.request.urlopen(req, timeout=5).read())
            except OSError: time.sleep(1)
        assert body and body["experiment"]["name"] == settings.experiment
    finally:
        proc.terminate(); proc.wait(timeout=30)
    # MLflow's web server and job workers went with it
    left, deadline = mlflow_processes() - before, time.time() + 15
    while left and time.time() < deadline: time.sleep(0.5); left = mlflow_processes() - before
    assert not left, f"processes of the MLflow UI still running: {left}"


def mlflow_processes() -> set[str]:
    r = subprocess.run(["pgrep", "-f", "-a", "--", "mlflow"], capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    return {line for line in r.stdout.splitlines() if "pgrep" not in line}


def test_each_step_notebook_runs_alone_with_its_defaults(tmp_path, monkeypatch):
    "A student opens the step notebooks one after another, with no runner: each runs with its defaults."
    monkeypatch.setenv("MLOPS_COURSE_WORK_DIR", str(tmp_path/"work"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in STEPS:
        run = execute_notebook(PIPELINE/f"{name}.ipynb", tmp_path/"out"/f"{name}.ipynb", cwd=PIPELINE)
        assert run.status == "ok", f"{name}: {run.error} at In [{run.cell}]"
    assert (tmp_path/"work/standalone/data/gate.json").is_file()
    assert not list(PIPELINE.glob("*.parquet")) and not (PIPELINE/"mlruns").exists()  # nothing written beside the notebooks
