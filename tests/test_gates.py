"CI quality gates (mlops_course.gates): the real `mlops-course gate` command against a real SQLite MLflow store with real runs and registered versions, real data files, JUnit XML read back; anomaly detection on a real pipeline's MLflow record."
import io
import math
import xml.etree.ElementTree as ET
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import raises, run_cli
from mlops_course.core import WorkbenchError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    "A SQLite MLflow store with three evaluated runs registered as versions 1-3 of churn-model (@prod = 1, @candidate = 3), and data files."
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    from mlops_course.data import make_churn, write_table
    tmp = tmp_path_factory.mktemp("gates")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("ci", artifact_location=(tmp/"artifacts").as_uri())
    metrics = {1: {"f1": 0.80, "roc_auc": 0.86, "brier": 0.150}, 2: {"f1": 0.795, "roc_auc": 0.861, "brier": 0.153},
               3: {"f1": 0.70, "roc_auc": 0.80, "brier": 0.190}}
    runs = {}
    client.create_registered_model("churn-model")
    for v, m in metrics.items():
        run = client.create_run(exp, run_name=f"model {v}")
        client.log_batch(run.info.run_id, metrics=[Metric(k, x, 0, 0) for k, x in m.items()])
        client.set_terminated(run.info.run_id)
        runs[v] = run.info.run_id
        mv = client.create_model_version("churn-model", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        client.set_model_version_tag("churn-model", mv.version, "test_f1", f"{m['f1']:.4f}")
        client.set_model_version_tag("churn-model", mv.version, "prod.previous", "1")  # registry bookkeeping: not a metric
    client.set_registered_model_alias("churn-model", "prod", "1")
    client.set_registered_model_alias("churn-model", "candidate", "3")
    batch = make_churn(1_500, seed=3)
    write_table(batch, tmp/"good.parquet")
    broken = batch.copy()
    broken.loc[:49, "age"] = -5                           # out of range
    broken = broken.drop(columns="region")                # a column the contract requires
    write_table(broken, tmp/"broken.parquet")
    (tmp/"corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file at all" * 20)
    return dict(tmp=tmp, uri=uri, runs=runs, metrics=metrics, client=client)


def junit(path):
    "The testsuite of a JUnit XML file, and its test cases by name."
    suite = ET.parse(path).getroot().find("testsuite")
    return suite, {c.get("name"): c for c in suite.findall("testcase")}


def test_cli_passes_with_exit_0_and_writes_every_report(store, work_env):
    tmp = store["tmp"]
    r = run_cli("gate", "--tracking-uri", store["uri"], "--candidate", "models:/churn-model/2", "--baseline", "models:/churn-model@prod",
                "--metric", "f1", "--metric", "test_f1", "--tolerance", "0.01", "--data", tmp/"good.parquet",
                "--junit", tmp/"pass.xml", "--markdown", tmp/"pass.md", "--html", tmp/"pass.html", env=work_env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED: all 3 gates passed" in r.stdout and not r.stderr.strip()
    suite, cases = junit(tmp/"pass.xml")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "0", "0")
    assert set(cases) == {"f1: models:/churn-model/2 vs models:/churn-model@prod", "test_f1: models:/churn-model/2 vs models:/churn-model@prod",
                          "contract 'churn' on good.parquet"}
    assert all(c.find("failure") is None for c in cases.values())
    md = (tmp/"pass.md").read_text()
    assert md.startswith("### ✅ Quality gates: all 3 gates passed") and md.count("| ✅ |") == 3
    assert "all 3 gates passed" in (tmp/"pass.html").read_text()


def test_cli_fails_with_exit_1_on_a_regression_a_broken_contract_and_an_unreadable_file(store, work_env):
    tmp = store["tmp"]
    r = run_cli("gate", "--tracking-uri", store["uri"], "--candidate", "models:/churn-model@candidate", "--baseline", "models:/churn-model@prod",
                "--metric", "f1", "--tolerance", "0.02", "--data", tmp/"good.parquet", "--data", tmp/"broken.parquet",
                "--data", tmp/"corrupt.parquet", "--junit", tmp/"fail.xml", "--markdown", tmp/"fail.md", env=work_env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED: 3 of 4 gates failed" in r.stdout and "Traceback" not in r.stderr
    suite, cases = junit(tmp/"fail.xml")
    assert (suite.get("tests"), suite.get("failures")) == ("4", "3")
    metric = cases["f1: models:/churn-model@candidate vs models:/churn-model@prod"].find("failure")
    assert metric is not None and "f1 regressed" in metric.get("message") and "0.7000" in metric.get("message") and "0.8000" in metric.get("message")
    broken = cases["contract 'churn' on broken.parquet"].find("failure").get("message")
    assert "region" in broken and "age" in broken                    # the missing column and the out-of-range values, by name
    assert "cannot be read" in cases["contract 'churn' on corrupt.parquet"].find("failure").get("message")
    assert cases["contract 'churn' on good.parquet"].find("failure") is None
    assert (tmp/"fail.md").read_text().count("| ❌ |") == 3


@pytest.mark.parametrize("args, fragment", [
    (["--data", "{tmp}/missing.parquet"], "data file '{tmp}/missing.parquet' does not exist"),
    (["--candidate", "models:/churn-model@candidate", "--baseline", "models:/churn-model@prod", "--metric", "auc"],
     "has no metric 'auc'; its metrics are: brier, f1, roc_auc, test_f1"),
    (["--candidate", "deadbeef" * 4, "--baseline", "models:/churn-model@prod", "--metric", "f1"], "no run '" + "deadbeef" * 4 + "'"),
])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(store, work_env, args, fragment):
    tmp = store["tmp"]
    old = tmp/"old.xml"
    old.write_text("<testsuites/>")   # an earlier report: bad input must leave it whole
    r = run_cli("gate", "--tracking-uri", store["uri"], *[a.format(tmp=tmp) for a in args], "--junit", old, "--markdown", tmp/"new.md", env=work_env)
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment.format(tmp=tmp) in err[0], r.stderr
    assert old.read_text() == "<testsuites/>" and not (tmp/"new.md").exists()


def gate_main(*args):
    "`mlops-course gate ARGS` through the CLI's own entry point in this process: exit code and stderr."
    from mlops_course.cli import main
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): code = main(["gate", *map(str, args)])
    return code, err.getvalue()


def test_more_bad_input_through_the_entry_point(store):
    tmp, uri = store["tmp"], store["uri"]
    ref = ["--candidate", "models:/churn-model@candidate", "--metric", "f1"]
    cases = [
        (["--tracking-uri", uri, "--candidate", "models:/churn-model@staging", "--baseline", "0.5", "--metric", "f1"], "no alias 'staging'"),
        (["--tracking-uri", uri, "--candidate", "models:/other@prod", "--baseline", "0.5", "--metric", "f1"], "no registered model 'other'"),
        (["--tracking-uri", f"sqlite:///{tmp}/typo.db", *ref, "--baseline", "0.5"], "no MLflow store at"),
        (["--tracking-uri", uri, *ref], "needs --candidate and --baseline"),
        (["--tracking-uri", uri], "nothing to check"),
        (["--tracking-uri", uri, "--candidate", "models:/churn-model/1", "--data", tmp/"good.parquet"], "without --metric"),
        (["--data", tmp/"good.parquet", "--contract", "no.such.module:schema"], "cannot import module 'no.such.module'"),
        (["--data", tmp/"good.xlsx"], "does not exist"),
        (["--tracking-uri", uri, *ref, "--baseline", "models:/churn-model@prod", "--tolerance", "-1"], "tolerance = -1.0 must be >= 0"),
        (["--data", tmp/"good.parquet", "--junit", tmp/"good.parquet"/"report.xml"], "cannot write the report"),
    ]
    for args, fragment in cases:
        code, err = gate_main(*args)
        assert code == 2 and err.startswith("error: ") and fragment in err and err.count("\n") == 1, (args, err)
    assert not (tmp/"typo.db").exists()                                     # a typo in the store's name creates no empty store
    (tmp/"data.xlsx").write_bytes(b"x")
    from mlops_course.gates import contract_gate
    raises(lambda: contract_gate(tmp/"data.xlsx"), "unsupported file type '.xlsx'")


def test_metric_gate_semantics(store):
    from mlops_course.gates import metric_gate, metrics_of
    uri, m = store["uri"], store["metrics"]
    label, got = metrics_of("models:/churn-model@prod", uri)
    assert label == "models:/churn-model@prod (version 1)" and got == {**m[1], "test_f1": 0.8}   # numeric tags without a dot only
    assert metrics_of(f"runs:/{store['runs'][2]}/model", uri)[1] == m[2]
    # tolerance edges: the limit itself passes, a hair below fails
    assert metric_gate({"f1": 0.78}, {"f1": 0.80}, "f1", tolerance=0.02 + 1e-12).passed
    assert not metric_gate({"f1": 0.7799}, {"f1": 0.80}, "f1", tolerance=0.02).passed
    # lower is better: the tolerance is added
    gate = metric_gate("models:/churn-model/2", "models:/churn-model@prod", "brier", tolerance=0.005, higher_is_better=False, tracking_uri=uri)
    assert gate.passed and gate.observed == m[2]["brier"] and gate.expected.startswith("brier ≤ 0.1550")
    assert not metric_gate("models:/churn-model/2", "models:/churn-model@prod", "brier", higher_is_better=False, tracking_uri=uri).passed
    # a fixed floor, a NaN candidate, the metrics. prefix
    assert not metric_gate("models:/churn-model@candidate", "0.75", "f1", tracking_uri=uri).passed
    assert metric_gate("models:/churn-model@candidate", 0.65, "metrics.f1", tracking_uri=uri).passed
    nan = metric_gate({"f1": math.nan}, {"f1": 0.1}, "f1")
    assert not nan.passed and "no usable f1" in nan.message
    raises(lambda: metric_gate({"f1": 0.8}, {"f1": math.nan}, "f1"), "nothing to compare with")
    raises(lambda: metric_gate({"f1": 0.8}, {"f1": 0.8}, "f1", tolerance=math.inf), "tolerance = inf must be a finite number")
    raises(lambda: metrics_of("models:/churn-model", uri), "is not models:/NAME@ALIAS")
    raises(lambda: metrics_of({"f1": "high"}), "metrics must be numbers")


def test_report_forms_read_back(store, tmp_path):
    from mlops_course.gates import Gate, contract_gate, run_gates
    csv = tmp_path/"batch.csv"
    pd.read_parquet(store["tmp"]/"good.parquet").assign(age=lambda d: d.age.where(d.index > 5, 150)).to_csv(csv, index=False)
    odd = Gate("a | b <c> & 'd'", "metric", False, 0.5, "x ≥ 0.6", "x fell\nby 0.1")
    report = run_gates([lambda: contract_gate(csv), odd])
    assert report.exit_code == 1 and report.gates[0].seconds > 0 and not report.gates[0].passed
    assert report.gates[0].report.failures["column"].tolist() == ["age"]
    suite, cases = junit(report.write_junit(tmp_path/"r.xml"))
    assert cases["a | b <c> & 'd'"].find("failure").get("message") == "x fell\nby 0.1"   # escaped on write, whole on read
    assert suite.get("timestamp") == report.created
    row = [line for line in report.to_markdown().splitlines() if line.startswith("| ❌ | a")][0]
    assert row.count(" | ") == 3 and "- **a \\| b <c> & 'd'**: x fell by 0.1" in report.to_markdown()   # one line per failure
    assert "a | b &lt;c&gt; &amp;" in report.to_html()
    assert run_gates([Gate("ok", "metric", True, 1.0, "x ≥ 0", "fine")]).exit_code == 0
    raises(lambda: run_gates([]), "no gates to run")


def test_robust_z_equals_a_direct_computation():
    from mlops_course.gates import robust_z
    rng = np.random.default_rng(0)
    x = pd.Series(np.exp(rng.normal(0, 0.3, 60)))
    x[[3, 17, 40]] = np.nan
    got = robust_z(x, window=12, min_runs=6, log=True, min_spread=0.05)
    seen, want = [], []
    for v in x:
        if np.isnan(v): want.append(np.nan); continue
        if len(seen) >= 6:
            past = np.log(np.array(seen[-12:]))
            med = np.median(past)
            want.append((np.log(v) - med) / max(1.4826 * np.median(np.abs(past - med)), 0.05))
        else: want.append(np.nan)
        seen.append(v)
    assert np.allclose(got.to_numpy(), want, equal_nan=True) and got.notna().sum() == 60 - 3 - 6


def test_run_anomalies_on_a_real_pipeline_record(tmp_path):
    "Modelled nights before, then two real runs: the second reuses `extract` from the cache and fails in `score`."
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    from mlops_course.config import load_settings
    from mlops_course.gates import run_anomalies, step_health
    from mlops_course.notebooks import write_notebook
    from mlops_course.pipeline import run_pipeline
    from mlops_course.spc import run_history
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("ops", artifact_location=(tmp_path/"artifacts").as_uri())
    write_notebook(tmp_path/"extract.ipynb", 'out_path: str = "n.txt"  # output', "from mlops_course.pipeline import data_path, log_metrics\n"
                   "data_path(out_path).write_text('7')\nlog_metrics(rows=7)")
    write_notebook(tmp_path/"score.ipynb", 'in_path: str = "n.txt"  # input\nfail: bool = False  # fail on purpose',
                   "from mlops_course.pipeline import data_path\nn = int(data_path(in_path).read_text())\nassert not fail, 'scoring failed'")
    (tmp_path/"p.yaml").write_text(yaml.safe_dump({"name": "p", "steps": {
        "extract": {"notebook": "extract.ipynb", "outputs": {"out_path": "n.txt"}},
        "score": {"notebook": "score.ipynb", "inputs": {"in_path": "n.txt"}}}}))
    # 15 modelled nights first (older start times), in the runner's shape; night 12's score takes 6x as long
    rng, day = np.random.default_rng(1), 86_400_000
    start0 = 1_700_000_000_000
    for night in range(15):
        start = start0 + night * day
        parent = client.create_run(exp, start_time=start, run_name="p pipeline", tags={"mlops_course.kind": "pipeline"}).info.run_id
        t = start
        for step, secs in (("extract", 1.0), ("score", 6.0 if night == 12 else 1.0)):
            child = client.create_run(exp, start_time=t, run_name=step, tags={"mlflow.parentRunId": parent, "mlops_course.step": step}).info.run_id
            if step == "extract": client.log_batch(child, metrics=[Metric("rows", 7.0, t, 0)])
            t += int(1000 * secs * np.exp(rng.normal(0, 0.1)))
            client.set_terminated(child, "FINISHED", end_time=t)
        client.set_terminated(parent, "FINISHED", end_time=t)
    settings = load_settings(env={"MLOPS_COURSE_WORK_DIR": str(tmp_path/"work"), "MLFLOW_TRACKING_URI": uri, "MLOPS_COURSE_EXPERIMENT": "ops"})
    first = run_pipeline(tmp_path/"p.yaml", settings=settings)
    second = run_pipeline(tmp_path/"p.yaml", ["score.fail=True"], settings=settings)
    assert first.status == "ok", [(s.name, s.status, s.error) for s in first.steps]
    assert [(s.name, s.status) for s in second.steps] == [("extract", "cached"), ("score", "failed")]
    history = run_history("ops", tracking_uri=uri, pipeline="p")
    assert len(history) == 17 and history["extract.status"].iloc[-1] == "CACHED"
    alerts = run_anomalies(history, min_runs=5, columns=["*.seconds", "extract.rows"])
    found = set(zip(alerts["position"], alerts["step"], alerts["kind"]))
    assert (12, "score", "slow") in found and (16, "score", "failed") in found
    assert alerts.loc[alerts["kind"] == "failed", "run_id"].tolist() == [second.run_id]
    assert not ((alerts["position"] == 16) & (alerts["step"] == "extract")).any()   # a cached step took no time: never judged
    assert not (alerts["column"] == "extract.rows").any()                            # 7 rows every night: nothing to say
    health = step_health(history)
    assert health.loc["extract", "cached"] == 1 and health.loc["score", "failed"] == 1 and health.loc["score", "runs"] == 17
    assert math.isclose(health.loc["score", "failure_rate"], 1 / 17)
    raises(lambda: run_anomalies(history, columns="*.latency"), "no column '*.latency'")
    raises(lambda: run_anomalies(history.drop(columns="status")), "run_history")


def test_release_history_and_delivery_metrics_from_real_promotions_and_a_rollback(store):
    "promote and rollback write the registry's tags; release_history reads them back and delivery_metrics counts DORA's four numbers."
    from mlops_course.gates import delivery_metrics, release_history
    from mlops_course.registry import promote, rollback
    client, uri = store["client"], store["uri"]
    client.create_registered_model("release-model")
    for v in (1, 2, 3):
        client.create_model_version("release-model", source="unused", run_id=store["runs"][v])
    for v, decision in ((1, "promote"), (2, "promote"), (3, "refuse")):
        client.set_model_version_tag("release-model", str(v), "gate.decision", decision)
    promote("release-model", 1, "prod", tracking_uri=uri)
    promote("release-model", 2, "prod", tracking_uri=uri)
    promote("release-model", 3, "prod", reason="pushed by hand", tracking_uri=uri)
    assert rollback("release-model", "prod", tracking_uri=uri) == "2"
    h = release_history("release-model", tracking_uri=uri)
    assert h["version"].tolist() == [1, 2, 3] and h["replaced"].tolist() == ["", "1", "2"]
    assert h["holds_alias"].tolist() == [False, True, False] and h["rolled_back"].notna().tolist() == [False, False, True]
    assert (h["lead_seconds"] >= 0).all() and h["restore_seconds"].notna().sum() == 1
    m = delivery_metrics(h)
    assert m["deployments"] == 3 and m["refused_by_gate"] == 1 and math.isclose(m["change_failure_rate"], 1 / 3)
    # another alias has no deployments: the rates are unknown, not zero
    empty = delivery_metrics(release_history("release-model", alias="staging", tracking_uri=uri))
    assert empty["deployments"] == 0 and np.isnan(empty["lead_time_seconds"]) and np.isnan(empty["change_failure_rate"])
    raises(lambda: release_history("no-model", tracking_uri=uri), "no registered model 'no-model'", "release-model")
    raises(lambda: release_history("release-model", tracking_uri=f"sqlite:///{store['tmp']}/missing.db"), "no MLflow store")
    raises(lambda: delivery_metrics(h.drop(columns="promoted")), "release_history")


def test_delivery_metrics_arithmetic_on_registry_tags_written_at_known_times(store):
    "Tags as promote/rollback write them, at chosen times: lead times, the gap between deployments, restore time, a stale rollback."
    from mlops_course.gates import delivery_metrics, release_history
    client, uri = store["client"], store["uri"]
    client.create_registered_model("timed-model")
    created = []
    for v in (1, 2, 3):
        mv = client.create_model_version("timed-model", source="unused", run_id=store["runs"][v])
        created.append(pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC").floor("s"))
    at = lambda i, s: (created[i] + pd.Timedelta(seconds=s)).isoformat()
    tags = {1: {"prod.promoted_at": at(0, 60), "prod.previous": ""},
            2: {"prod.promoted_at": at(1, 3_600), "prod.previous": "1", "prod.rolled_back_at": at(1, 10)},  # rolled back before its last promotion
            3: {"prod.promoted_at": at(2, 7_200), "prod.previous": "2", "prod.rolled_back_at": at(2, 7_200 + 900)}}
    for v, t in tags.items():
        for k, x in t.items(): client.set_model_version_tag("timed-model", str(v), k, x)
    h = release_history("timed-model", tracking_uri=uri)
    assert h["lead_seconds"].tolist() == [60.0, 3_600.0, 7_200.0]
    assert h["rolled_back"].notna().tolist() == [False, False, True] and h["restore_seconds"].iloc[2] == 900.0
    m = delivery_metrics(h)
    assert m["lead_time_seconds"] == 3_600.0 and m["time_to_restore_seconds"] == 900.0 and math.isclose(m["change_failure_rate"], 1 / 3)
    promoted = sorted(pd.Timestamp(t["prod.promoted_at"]) for t in tags.values())
    gaps = [(b - a).total_seconds() for a, b in zip(promoted, promoted[1:])]
    assert m["median_seconds_between_deployments"] == float(np.median(gaps))
