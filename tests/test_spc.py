"""Statistical process control over real pipeline runs: run_history reads a real MLflow store written by the real
runner (steps in real kernels), and the control charts agree with the limits computed here from their definitions."""
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from mlops_course.config import load_settings
from mlops_course.core import WorkbenchError, file_sha256
from mlops_course.pipeline import run_pipeline
from mlops_course.spc import (FACTORY_COLOURS, META_COLUMNS, ewma, factory_status, plot_control_chart, plot_factory_line,
                              run_history, shewhart)
from conftest import ROOT

D2 = 2 / math.sqrt(math.pi)
STEPS = ["ingest", "validate", "prepare"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    "A real MLflow store holding four runs of a small spec of the course's step notebooks: two fresh, one partly cached, one failed."
    tmp = tmp_path_factory.mktemp("spc")
    nbs = ROOT/"nbs"/"pipeline"
    spec = {"name": "small", "parameters": {"seed": 42}, "steps": {
        "ingest": {"notebook": str(nbs/"ingest.ipynb"), "env": "data", "parameters": {"n_rows": 1000}, "outputs": {"raw_path": "raw.parquet"}},
        "validate": {"notebook": str(nbs/"validate.ipynb"), "env": "data", "inputs": {"raw_path": "raw.parquet"}, "outputs": {"valid_path": "valid.parquet"}},
        "prepare": {"notebook": str(nbs/"prepare.ipynb"), "env": "dev", "inputs": {"valid_path": "valid.parquet"},
                    "outputs": {"train_path": "train.parquet", "test_path": "test.parquet"}}}}
    (tmp/"small.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp}/mlflow.db"
    def settings(name): return load_settings(env={"MLOPS_COURSE_WORK_DIR": str(tmp/name), "MLFLOW_TRACKING_URI": uri})
    results = [run_pipeline(tmp/"small.yaml", settings=settings("a")),
               run_pipeline(tmp/"small.yaml", settings=settings("b")),
               run_pipeline(tmp/"small.yaml", ["prepare.seed=7"], settings=settings("a")),  # ingest and validate cached
               run_pipeline(tmp/"small.yaml", [f"ingest.source={tmp/'missing.csv'}"], settings=settings("c"))]  # ingest fails
    assert [r.status for r in results] == ["ok", "ok", "ok", "failed"], [[(s.name, s.status, s.error) for s in r.steps] for r in results]
    return uri, results


def test_history_has_a_row_per_pipeline_run_in_start_order_with_step_metrics_and_durations(store):
    uri, results = store
    h = run_history("mlops-course", tracking_uri=uri)
    assert h["run_id"].tolist() == [r.run_id for r in results]
    assert h["start_time"].is_monotonic_increasing and list(h.columns[:len(META_COLUMNS)]) == META_COLUMNS
    assert h["status"].tolist() == ["FINISHED", "FINISHED", "FINISHED", "FAILED"] and (h["kind"] == "pipeline").all()
    assert h.attrs["steps"] == STEPS
    # every step's metrics and duration, checked against the step runs read here with MlflowClient
    client = MlflowClient(uri)
    for pos in (0, 1):
        for r in results[pos].steps:
            run = client.get_run(r.run_id)
            for k, v in run.data.metrics.items(): assert h.loc[pos, f"{r.name}.{k}"] == v, (pos, r.name, k)
            assert h.loc[pos, f"{r.name}.seconds"] == pytest.approx((run.info.end_time - run.info.start_time) / 1000)
            assert h.loc[pos, f"{r.name}.status"] == "FINISHED"
    assert (h.loc[:2, "ingest.rows"] == 1000).all() and (h.loc[:2, "validate.checks_failed"] == 0).all()
    assert (h.loc[:2, "prepare.train_rows"] > h.loc[:2, "prepare.test_rows"]).all()
    assert h.loc[0, "steps_ok"] == 3 and h.loc[2, "steps_cached"] == 2


def test_a_cached_step_reports_the_metrics_of_the_run_that_made_its_outputs(store):
    uri, results = store
    h = run_history("mlops-course", tracking_uri=uri)
    assert h.loc[2, ["ingest.status", "validate.status", "prepare.status"]].tolist() == ["CACHED", "CACHED", "FINISHED"]
    assert h.loc[2, "validate.checks_failed"] == h.loc[0, "validate.checks_failed"] and h.loc[2, "ingest.rows"] == 1000
    assert h.loc[2, "prepare.train_rows"] == h.loc[0, "prepare.train_rows"]   # another split of the same rows, same sizes


def test_a_failed_run_keeps_its_status_and_does_not_break_the_history(store):
    uri, results = store
    h = run_history("mlops-course", tracking_uri=uri)
    failed = h.iloc[3]
    assert failed["status"] == "FAILED" and failed["ingest.status"] == "FAILED"
    assert np.isnan(failed["ingest.rows"]) and np.isnan(failed["validate.seconds"]) and pd.isna(failed["prepare.status"])
    assert failed["steps_failed"] == 1 and failed["steps_skipped"] == 2
    assert len(run_history("mlops-course", tracking_uri=uri, status="FINISHED")) == 3
    # the factory line says the station failed and what was not run, rather than charting a hole
    with pytest.raises(WorkbenchError, match="at least 5"):
        shewhart(h["ingest.rows"].dropna())
    state = factory_status(h, at=3).groupby("station")["state"].agg(set)
    assert state["ingest"] == {"failed"} and state["validate"] == {"not run"} and state["prepare"] == {"not run"}


def test_hashes_are_the_content_hashes_of_the_files_each_step_wrote(store):
    uri, results = store
    h = run_history("mlops-course", tracking_uri=uri, hashes=True)
    for pos in (0, 1):
        for name, step in results[pos].spec.steps.items():
            for k, p in step.outputs.items():
                if pos == 0 and name == "prepare": continue  # env a's split files were rewritten by the third run
                assert h.loc[pos, f"{name}.{k}.sha256"] == file_sha256(p), (pos, name, k)
    assert h.loc[2, "prepare.train_path.sha256"] == file_sha256(results[2].spec.steps["prepare"].outputs["train_path"])
    # same parameters in two work dirs: the same bytes; another split seed: other bytes
    assert h.loc[0, "prepare.train_path.sha256"] == h.loc[1, "prepare.train_path.sha256"] != h.loc[2, "prepare.train_path.sha256"]
    assert "ingest.raw_path.sha256" not in run_history("mlops-course", tracking_uri=uri).columns


def test_metrics_select_columns_by_name_or_pattern_and_unknown_ones_are_named(store):
    uri, _ = store
    h = run_history("mlops-course", metrics=["*.seconds", "ingest.rows"], tracking_uri=uri)
    assert list(h.columns) == META_COLUMNS + ["ingest.rows", "ingest.seconds", "validate.seconds", "prepare.seconds"]
    assert len(run_history("mlops-course", tracking_uri=uri, pipeline="small")) == 4
    assert run_history("mlops-course", tracking_uri=uri, pipeline="course").empty
    with pytest.raises(WorkbenchError, match=r"'ingest\.rowz'.*ingest\.rows"):
        run_history("mlops-course", metrics="ingest.rowz", tracking_uri=uri)
    with pytest.raises(WorkbenchError, match=r"no experiment 'nope'.*mlops-course"):
        run_history("nope", tracking_uri=uri)


def test_control_charts_on_real_nightly_pipeline_runs_see_what_the_contract_lets_pass(tmp_path):
    "Seven nights of the real ingest -> validate steps on the day's CSV export; night 6's export lost more values, still within the contract."
    from mlops_course.data import make_churn, write_table
    nbs = ROOT/"nbs"/"pipeline"
    spec = {"name": "nightly", "steps": {
        "ingest": {"notebook": str(nbs/"ingest.ipynb"), "env": "data", "outputs": {"raw_path": "raw.parquet"}},
        "validate": {"notebook": str(nbs/"validate.ipynb"), "env": "data", "parameters": {"min_rows": 500},
                     "inputs": {"raw_path": "raw.parquet"}, "outputs": {"valid_path": "valid.parquet"}}}}
    (tmp_path/"nightly.yaml").write_text(yaml.safe_dump(spec))
    settings = load_settings(env={"MLOPS_COURSE_WORK_DIR": str(tmp_path/"work")})
    NIGHTS, FAULT = 7, 6
    for night in range(NIGHTS):
        export = write_table(make_churn(1000, seed=100 + night, missing_rate=0.045 if night == FAULT else 0.02), tmp_path/f"night-{night}.csv")
        result = run_pipeline(tmp_path/"nightly.yaml", [f"ingest.source={export}"], settings=settings)
        assert result.status == "ok", [(r.name, r.status, r.error) for r in result.steps]  # the contract (5% missing at most) passes every night
    h = run_history(settings.experiment, tracking_uri=settings.tracking_uri, pipeline="nightly")
    assert len(h) == NIGHTS and (h["validate.checks_failed"] == 0).all() and h["validate.seconds"].gt(0).all()
    nulls = [c for c in h.columns if c.startswith("validate.null_rate_")]
    assert len(nulls) >= 5
    judged = factory_status(h, nulls + ["ingest.rows"], baseline=FAULT, at=FAULT).set_index("metric")
    flagged = judged.index[judged["state"] == "out of control"].tolist()
    assert len(flagged) >= 3 and set(flagged) <= set(nulls), judged[["value", "lcl", "ucl", "state"]]
    assert judged.loc["ingest.rows", "state"] == "in control"  # the batch was complete: only its missing values changed
    before = factory_status(h.iloc[:FAULT], nulls, at=FAULT - 1)
    assert (before["state"] == "in control").all()  # the six ordinary nights are in control of their own limits
    fig = plot_factory_line(h, nulls, baseline=FAULT, at=FAULT, steps=["ingest", "validate"])
    assert {p.get_gid().split(":")[1]: p.get_gid().split(":")[2] for p in fig.axes[0].patches
            if (p.get_gid() or "").startswith("station:")}["validate"] == "out of control"


def test_plain_runs_are_rows_in_start_order_and_nested_runs_are_prefixed_by_their_name(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("own", artifact_location=(tmp_path/"artifacts").as_uri())
    assert list(run_history("own", tracking_uri=uri).columns) == META_COLUMNS  # no runs yet: an empty table
    with pytest.raises(WorkbenchError, match="no runs"):
        run_history("own", metrics="rows", tracking_uri=uri)
    for night, rows in [(2, 30.0), (0, 10.0), (1, 20.0)]:  # logged out of order
        run = client.create_run(exp, start_time=1_000_000 * (night + 1), run_name=f"night {night}")
        client.log_batch(run.info.run_id, metrics=[Metric("ingest.rows", rows, 0, 0)])
        child = client.create_run(exp, start_time=1_000_000 * (night + 1) + 10, run_name="score",
                                  tags={"mlflow.parentRunId": run.info.run_id})
        client.log_batch(child.info.run_id, metrics=[Metric("auc", 0.7 + night / 100, 0, 0)])
        client.set_terminated(child.info.run_id, end_time=1_000_000 * (night + 1) + 2010)
        client.set_terminated(run.info.run_id, end_time=1_000_000 * (night + 1) + 3000)
    h = run_history("own", tracking_uri=uri)
    assert h["run_name"].tolist() == ["night 0", "night 1", "night 2"] and h["ingest.rows"].tolist() == [10.0, 20.0, 30.0]
    assert h["score.auc"].tolist() == pytest.approx([0.70, 0.71, 0.72]) and h["score.seconds"].tolist() == [2.0] * 3
    assert h["seconds"].tolist() == [3.0] * 3 and (h["kind"] == "run").all()


# --- control charts, against limits computed here from their definitions

NOISE = np.array([0.3, -0.5, 0.8, -0.2, 0.1, -0.7, 0.4, 0.0, -0.3, 0.6, -0.4, 0.2, -0.1, 0.5, -0.6, 0.3, -0.2, 0.1, 0.4, -0.5])


def limits(x, n):
    base = np.asarray(x[:n], float)
    centre, sd = base.mean(), np.abs(np.diff(base)).mean() / 1.128379
    return centre, sd


def test_shewhart_limits_come_from_the_baseline_by_moving_range_and_flag_only_the_special_cause():
    x = 50 + NOISE.copy()
    centre, sd = limits(x, 15)
    chart = shewhart(pd.Series(x, name="rows"), baseline=15)
    assert chart["centre"].iloc[0] == pytest.approx(centre) and chart.attrs["sigma_hat"] == pytest.approx(sd, rel=1e-5)
    assert np.allclose(chart["ucl"], centre + 3 * sd, rtol=1e-6) and np.allclose(chart["lcl"], centre - 3 * sd, rtol=1e-6)
    assert not chart["out_of_control"].any() and (chart["rule"] == "").all()
    x[17] = centre - 3.2 * sd                                    # just below the lower limit
    chart = shewhart(x, baseline=15)
    assert chart.index[chart["out_of_control"]].tolist() == [17] and chart.loc[17, "rule"] == "below LCL (3σ)"
    assert shewhart(x, baseline=15, sigma=3.5)["out_of_control"].sum() == 0   # wider limits: inside
    assert list(chart.columns) == ["value", "centre", "lcl", "ucl", "out_of_control", "rule"]


@pytest.mark.parametrize("tail, first, rule", [
    ([2.5, 0.0, 2.5], 19, "2 of 3 beyond 2σ"),
    ([1.5, 1.5, 0.0, 1.5, 1.5], 21, "4 of 5 beyond 1σ"),
    ([0.5] * 8, 24, "8 on one side"),
])
def test_the_western_electric_rules_fire_on_the_point_that_completes_them(tail, first, rule):
    base = 50 + NOISE[:15]
    centre, sd = limits(base, 15)
    x = np.r_[base, centre - 0.1 * sd, centre - 0.1 * sd, centre + np.array(tail) * sd]  # two quiet points below the centre, then the pattern
    assert not shewhart(x, baseline=15)["out_of_control"].any()    # nothing beyond 3σ
    chart = shewhart(x, baseline=15, western_electric=True)
    flagged = chart.index[chart["out_of_control"]].tolist()
    assert flagged[0] == first and rule in chart.loc[first, "rule"], chart.iloc[15:]


def test_ewma_follows_its_recursion_and_time_varying_limits_and_sees_a_small_shift_first():
    x = 50 + np.r_[NOISE, NOISE]
    centre, sd = limits(x, 20)
    x[20:] += 1.2 * sd                                             # a small sustained shift
    chart = ewma(pd.Series(x), lam=0.2, L=3.0, baseline=20)
    z, zs, widths = centre, [], []
    for t, v in enumerate(x, start=1):
        z = 0.2 * v + 0.8 * z
        zs.append(z); widths.append(3 * sd * math.sqrt(0.2 / 1.8 * (1 - 0.8 ** (2 * t))))
    assert np.allclose(chart["ewma"], zs) and np.allclose(chart["ucl"] - centre, widths, rtol=1e-5)
    assert not chart["out_of_control"].iloc[:20].any()
    first_ewma = chart.index[chart["out_of_control"]][0]
    shew = shewhart(x, baseline=20)
    assert 20 <= first_ewma < 40 and not shew["out_of_control"].any() and chart.loc[first_ewma, "rule"] == "EWMA above UCL (3σ)"
    assert not ewma(50 + NOISE, baseline=15)["out_of_control"].any()
    one = ewma(x, lam=1.0, baseline=20)                            # lam = 1 is the individuals chart
    assert np.allclose(one["ucl"], shew["ucl"]) and one["out_of_control"].tolist() == shew["out_of_control"].tolist()


@pytest.mark.parametrize("call, message", [
    (lambda: ewma(50 + NOISE, lam=0), "lam = 0 must be a number > 0 and <= 1"),
    (lambda: ewma(50 + NOISE, lam=1.2), "lam = 1.2"),
    (lambda: ewma(50 + NOISE, L=0), "L = 0"),
    (lambda: shewhart(50 + NOISE, sigma=-1), "sigma = -1"),
    (lambda: shewhart(50 + NOISE, baseline=4), "between 5 and the 20"),
    (lambda: shewhart(50 + NOISE, baseline=slice(0, 20, 2)), "consecutive"),
    (lambda: shewhart(50 + NOISE, baseline="all"), "number of first points"),
    (lambda: shewhart(np.r_[NOISE[:9], np.nan, NOISE[10:]]), "1 missing or infinite value(s) at 9"),
    (lambda: ewma([1.0, 2.0]), "at least 5"),
    (lambda: shewhart(np.ones((5, 2))), "1-D"),
    (lambda: shewhart(pd.Series(["a"] * 6)), "not numbers"),
    (lambda: plot_control_chart(pd.DataFrame({"value": [1]})), "shewhart() or ewma()"),
])
def test_bad_arguments_give_clear_errors(call, message):
    with pytest.raises(WorkbenchError) as e: call()
    assert message in str(e.value), str(e.value)


def test_the_drawings_show_the_signals_and_the_stations_state():
    x = 50 + np.r_[NOISE, NOISE]
    x[30] += 5
    chart = shewhart(pd.Series(x, name="ingest.rows"), baseline=20)
    fig = plot_control_chart(chart)
    circled = [ln for ln in fig.axes[0].lines if ln.get_label() == "out of control"]
    assert len(circled) == 1 and circled[0].get_xdata().tolist() == [30]
    assert fig.axes[0].get_title() == "ingest.rows: individuals (Shewhart) chart"
    history = pd.DataFrame({"run_name": [f"n{i}" for i in range(40)], "ingest.rows": x, "train.auc": 0.8 + 0.01 * np.r_[NOISE, NOISE],
                            "train.status": ["FINISHED"] * 39 + ["FAILED"]})
    at30 = factory_status(history, baseline=20, at=30).set_index("metric")["state"]
    assert at30.to_dict() == {"ingest.rows": "out of control", "train.auc": "in control"}
    fig = plot_factory_line(history, baseline=20, at=-1, steps=["ingest", "train"])
    boxes = {p.get_gid().split(":")[1]: p.get_facecolor() for p in fig.axes[0].patches if (p.get_gid() or "").startswith("station:")}
    from matplotlib.colors import to_rgba
    assert boxes == {"ingest": to_rgba(FACTORY_COLOURS["in control"]), "train": to_rgba(FACTORY_COLOURS["failed"])}
    with pytest.raises(WorkbenchError, match="at = 40"):
        factory_status(history, at=40)
    with pytest.raises(WorkbenchError, match="valid methods are: shewhart, ewma"):
        factory_status(history, method="cusum")
