"Experiment tracking against runs logged in a real MLflow store (content, sorting, bad input), and the scaling helpers (Amdahl's fit, timing tables)."
import time

import numpy as np
import pandas as pd
import pytest

from mlops_course.core import WorkbenchError
from mlops_course.scaling import (amdahl_fraction, amdahl_speedup, default_n_jobs, inference_scaling, plot_scaling, time_call,
                                  training_scaling)
from mlops_course.pipeline import _ensure_experiment
from mlops_course.tracking import (BASE_COLUMNS, best_run, compare_runs, plot_parallel_coordinates, plot_param_vs_metric, runs_table,
                                   use_experiment)

RUNS = [  # name, params, metrics, tags, final status (None: still running)
    ("lr-small", {"algorithm": "lr", "C": "0.1"}, {"auc": 0.70, "loss": 0.6}, {"team": "a"}, "FINISHED"),
    ("lr-big", {"algorithm": "lr", "C": "10"}, {"auc": 0.80, "loss": 0.5}, {"team": "a"}, "FINISHED"),
    ("rf-deep", {"algorithm": "rf", "max_depth": "None"}, {"auc": 0.78, "loss": 0.4}, {"team": "b"}, "FINISHED"),
    ("rf-crashed", {"algorithm": "rf", "max_depth": "3"}, {"auc": 0.99}, {}, "FAILED"),
    ("rf-running", {"algorithm": "rf", "max_depth": "5"}, {"auc": 0.95}, {}, None),
    ("knn-no-metric", {"algorithm": "knn"}, {}, {}, "FINISHED"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    "A fresh MLflow store: experiment 'sweep' with the RUNS above (logged in that order), and an experiment 'empty'."
    from mlflow.tracking import MlflowClient
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("sweep", artifact_location=(folder/"sweep").as_uri())
    client.create_experiment("empty", artifact_location=(folder/"empty").as_uri())
    ids = {}
    for name, params, metrics, tags, status in RUNS:
        rid = client.create_run(exp, run_name=name).info.run_id
        for k, v in params.items(): client.log_param(rid, k, v)
        for k, v in metrics.items(): client.log_metric(rid, k, v)
        for k, v in tags.items(): client.set_tag(rid, k, v)
        if status: client.set_terminated(rid, status)
        ids[name] = rid
        time.sleep(0.01)  # distinct start times, so "newest first" has one answer
    return uri, ids


def names(table): return table["run_name"].tolist()


# --- runs_table -------------------------------------------------------------

def test_runs_table_holds_every_run_with_its_params_metrics_and_tags(store):
    uri, ids = store
    t = runs_table("sweep", uri)
    assert names(t) == [r[0] for r in RUNS][::-1]                                  # newest first
    assert dict(zip(t["run_name"], t["run_id"])) == ids
    assert list(t.columns[:len(BASE_COLUMNS)]) == BASE_COLUMNS
    assert {"params.algorithm", "params.C", "params.max_depth", "metrics.auc", "metrics.loss", "tags.team"} <= set(t.columns)
    assert not [c for c in t.columns if c.startswith("tags.mlflow.")]             # MLflow's own tags left out
    row = t.set_index("run_name")
    assert row["params.C"].dtype == float and row.loc["lr-big", "params.C"] == 10.0 and row.loc["lr-small", "params.C"] == 0.1
    assert row["params.C"].isna().sum() == 4                                        # runs without the param: empty cells
    assert row.loc["rf-deep", "params.max_depth"] == "None" and row.loc["rf-crashed", "params.max_depth"] == "3"   # mixed: stays text
    assert row.loc["rf-running", "status"] == "RUNNING" and np.isnan(row.loc["rf-running", "duration_s"])
    assert row.loc["rf-crashed", "status"] == "FAILED" and (row.drop("rf-running")["duration_s"] >= 0).all()
    assert row.loc["lr-small", "tags.team"] == "a" and pd.isna(row.loc["rf-crashed", "tags.team"])
    assert str(row["start_time"].dt.tz) == "UTC" and t["start_time"].is_monotonic_decreasing


def test_runs_table_sorts_by_a_metric_with_missing_values_last(store):
    uri, _ = store
    assert names(runs_table("sweep", uri, metric="auc")) == ["rf-crashed", "rf-running", "lr-big", "rf-deep", "lr-small", "knn-no-metric"]
    by_loss = runs_table("sweep", uri, metric="metrics.loss", ascending=True)
    assert names(by_loss)[:3] == ["rf-deep", "lr-big", "lr-small"] and by_loss["metrics.loss"].iloc[3:].isna().all()


def test_runs_table_filters_with_mlflow_syntax(store):
    uri, _ = store
    assert set(names(runs_table("sweep", uri, filter_string="params.algorithm = 'rf'"))) == {"rf-deep", "rf-crashed", "rf-running"}
    assert names(runs_table("sweep", uri, metric="auc", filter_string="metrics.auc > 0.75 and attributes.status = 'FINISHED'")) == ["lr-big", "rf-deep"]
    assert len(runs_table("sweep", uri, max_results=2)) == 2
    with pytest.raises(WorkbenchError, match="rejected the filter"): runs_table("sweep", uri, filter_string="params.algorithm == rf")
    with pytest.raises(WorkbenchError, match="max_results"): runs_table("sweep", uri, max_results=0)


def test_unknown_experiment_and_metric_are_named_with_what_exists(store):
    uri, _ = store
    with pytest.raises(WorkbenchError, match="no experiment 'swep'.*empty, sweep"): runs_table("swep", uri)
    with pytest.raises(WorkbenchError, match="no metric 'accuracy'.*valid ones are: auc, loss"): runs_table("sweep", uri, metric="accuracy")
    with pytest.raises(WorkbenchError, match="no metric 'algorithm'"): runs_table("sweep", uri, metric="algorithm")   # a param is not a metric


def test_an_empty_experiment_gives_an_empty_table_and_no_best_run(store):
    uri, _ = store
    t = runs_table("empty", uri, metric="auc")
    assert t.empty and list(t.columns) == BASE_COLUMNS
    with pytest.raises(WorkbenchError, match="'empty' has no runs"): best_run("empty", "auc", uri)


def test_the_default_store_is_the_workbench_setting(store, monkeypatch, tmp_path):
    uri, ids = store
    monkeypatch.setenv("MLOPS_COURSE_WORK_DIR", str(tmp_path/"work"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert set(runs_table("sweep")["run_id"]) == set(ids.values())


# --- use_experiment -------------------------------------------------------------

def test_use_experiment_makes_the_settings_experiment_active_and_finds_it_again(monkeypatch, tmp_path):
    import mlflow
    monkeypatch.setenv("MLOPS_COURSE_WORK_DIR", str(tmp_path/"work"))
    monkeypatch.setenv("MLOPS_COURSE_EXPERIMENT", "class-of-2026")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    exp = use_experiment()
    with mlflow.start_run() as run: mlflow.log_text("hi", "note.txt")
    assert run.info.experiment_id == exp == use_experiment("class-of-2026")  # found, not made twice
    assert (tmp_path/"work"/"mlartifacts"/run.info.run_id/"artifacts"/"note.txt").read_text() == "hi"  # artifacts in the work dir
    mlflow.MlflowClient().delete_experiment(exp)
    with pytest.raises(Exception, match="deleted experiment 'class-of-2026'"): use_experiment()


def test_losing_the_race_to_create_an_experiment_takes_the_winners(tmp_path):
    "Two processes look the name up, both find nothing, both create: the loser must use the winner's experiment (MLflow 3.17's set_experiment does not)."
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    class LookedUpTooEarly(MlflowClient):  # its lookup ran just before the other process created the experiment
        looked = False
        def get_experiment_by_name(self, name):
            if not self.looked:
                self.looked = True
                return None
            return super().get_experiment_by_name(name)

    winner = MlflowClient(uri).create_experiment("class", artifact_location=(tmp_path/"a").as_uri())
    assert _ensure_experiment(LookedUpTooEarly(uri), "class", tmp_path/"a") == winner
    with pytest.raises(Exception, match="Invalid experiment name"):  # other errors still surface
        _ensure_experiment(MlflowClient(uri), "", tmp_path/"a")


# --- best_run and compare_runs -----------------------------------------------

def test_best_run_counts_only_finished_runs(store):
    uri, ids = store
    best = best_run("sweep", "auc", uri)                                            # 0.99 failed and 0.95 still running do not count
    assert best["run_name"] == "lr-big" and best["run_id"] == ids["lr-big"] and best["metrics.auc"] == 0.80
    assert best_run("sweep", "loss", uri, ascending=True)["run_name"] == "rf-deep"
    assert best_run("sweep", "auc", uri, filter_string="params.algorithm = 'rf'")["run_name"] == "rf-deep"
    with pytest.raises(WorkbenchError, match="no FINISHED run .* has the metric 'auc' \\(their metrics: none"):
        best_run("sweep", "auc", uri, filter_string="params.algorithm = 'knn'")
    with pytest.raises(WorkbenchError, match="metric 'acc' \\(their metrics: auc, loss"): best_run("sweep", "acc", uri)
    with pytest.raises(WorkbenchError, match="statuses: FAILED, RUNNING"):             # the metric exists, only on unfinished runs
        best_run("sweep", "auc", uri, filter_string="attributes.status != 'FINISHED'")


def test_compare_runs_keeps_what_differs(store):
    uri, ids = store
    side = compare_runs([ids["lr-small"], ids["lr-big"]], uri)
    assert list(side.columns) == ["lr-small", "lr-big"]
    assert {"params.C", "metrics.auc", "metrics.loss"} <= set(side.index)
    assert not {"params.algorithm", "tags.team"} & set(side.index)                 # equal in both: dropped
    assert side.loc["params.C"].tolist() == ["0.1", "10"]                          # as MLflow stored them
    mixed = compare_runs([ids["lr-big"], ids["rf-deep"], ids["knn-no-metric"]], uri)
    assert mixed.loc["params.C"].tolist() == ["10", None, None] and mixed.loc["params.max_depth"].tolist() == [None, "None", None]
    full = compare_runs([ids["lr-small"], ids["lr-big"]], uri, only_differences=False)
    assert full.loc["params.algorithm"].tolist() == ["lr", "lr"] and full.loc["tags.team"].tolist() == ["a", "a"]


def test_compare_runs_rejects_unknown_ids_and_single_runs(store):
    uri, ids = store
    with pytest.raises(WorkbenchError, match="no run 'deadbeef'"): compare_runs([ids["lr-big"], "deadbeef"], uri)
    with pytest.raises(WorkbenchError, match="at least two"): compare_runs([ids["lr-big"]], uri)


# --- plots --------------------------------------------------------------------

def test_plots_draw_one_mark_per_run_and_name_unknown_columns(store):
    uri, _ = store
    t = runs_table("sweep", uri)
    ax = plot_parallel_coordinates(t, ["algorithm", "C", "max_depth"], "auc").axes[0]
    assert len(ax.lines) == 5                                                       # the run without the metric is left out
    assert [x.get_text() for x in ax.get_xticklabels()] == ["algorithm", "C", "max_depth", "auc"]
    ax = plot_param_vs_metric(t, "C", "auc", group="algorithm").axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 2 and ax.get_xscale() == "log"   # C from 0.1 to 10
    with pytest.raises(WorkbenchError, match="no param or metric 'depth'.*max_depth"): plot_parallel_coordinates(t, ["depth"], "auc")
    with pytest.raises(WorkbenchError, match="at least one param"): plot_parallel_coordinates(t, [], "auc")
    with pytest.raises(WorkbenchError, match="no metric 'C'"): plot_param_vs_metric(t, "algorithm", "C")


# --- scaling --------------------------------------------------------------------

@pytest.mark.parametrize("f", [0.0, 0.02, 0.25, 0.9, 1.0])
def test_amdahl_fraction_recovers_the_serial_fraction(f):
    n = np.array([1, 2, 3, 8, 32])
    s = amdahl_speedup(n, f)
    assert np.isclose(amdahl_fraction(dict(zip(n.tolist(), s))), f)
    table = pd.DataFrame({"n_jobs": n, "speedup": s})                               # the shape training_scaling returns
    assert np.isclose(amdahl_fraction(table), f)
    noisy = s * np.array([1.0, 1.01, 0.99, 1.02, 0.98])
    assert abs(amdahl_fraction(pd.Series(noisy, index=n)) - f) < 0.02


def test_amdahl_law_and_fit_reject_impossible_input():
    assert np.isclose(amdahl_speedup(1e9, 0.1), 10) and amdahl_speedup(8, 0.0) == 8
    assert amdahl_fraction({1: 1, 4: 5.0}) == 0.0 and amdahl_fraction({1: 1, 4: 0.5}) == 1.0   # superlinear, slowdown: clipped
    for bad in [{1: 1.0}, {1: 1.0, 2: 0.0}, {0: 1.0, 2: 1.5}]:
        with pytest.raises(WorkbenchError): amdahl_fraction(bad)
    with pytest.raises(WorkbenchError, match="lacks column"): amdahl_fraction(pd.DataFrame({"workers": [1, 2], "speedup": [1, 2]}))
    with pytest.raises(WorkbenchError, match="between 0 and 1"): amdahl_speedup(2, 1.5)


def test_default_n_jobs_follows_the_machine(monkeypatch):
    assert default_n_jobs(1) == [1] and default_n_jobs(3) == [1, 2, 3] and default_n_jobs(8) == [1, 2, 4, 8]
    monkeypatch.setattr("os.cpu_count", lambda: 12)
    assert default_n_jobs() == [1, 2, 4, 8, 12]


def test_time_call_takes_the_best_of_repeat_timings():
    calls = []
    assert time_call(lambda: (calls.append(1), time.sleep(0.005)), repeat=4, number=2) >= 0.0049
    assert len(calls) == 8
    with pytest.raises(WorkbenchError, match="at least 1"): time_call(lambda: None, number=0)


class Recorder:
    "A stand-in estimator: records the n_jobs it was made with and the rows it sees."
    made, rows = [], []
    def __init__(self, n_jobs=1): self.n_jobs = n_jobs; Recorder.made.append(n_jobs)
    def fit(self, X, y): return self
    def predict(self, X): Recorder.rows.append(len(X)); return np.zeros(len(X))


def test_training_scaling_measures_every_count_from_one():
    Recorder.made.clear()
    t = training_scaling(Recorder, np.zeros((5, 2)), np.zeros(5), n_jobs=[4, 2, 4], repeat=2)
    assert t["n_jobs"].tolist() == [1, 2, 4] and list(t.columns) == ["n_jobs", "seconds", "speedup", "efficiency", "ideal"]
    assert Recorder.made.count(2) == 2 and Recorder.made.count(4) == 2             # each count timed `repeat` times
    assert t["speedup"].iloc[0] == 1 and np.allclose(t["speedup"], t["seconds"].iloc[0] / t["seconds"])
    assert np.allclose(t["efficiency"], t["speedup"] / t["n_jobs"]) and t.attrs["estimator"] == "Recorder"
    for bad in ([0, 2], [1.5], [True]):
        with pytest.raises(WorkbenchError, match="n_jobs"): training_scaling(Recorder, None, None, n_jobs=bad)
    with pytest.raises(WorkbenchError, match="fit"): training_scaling(lambda n: object(), None, None, n_jobs=[1])


def test_inference_scaling_sends_batches_of_each_size():
    Recorder.rows.clear()
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    t = inference_scaling(Recorder(), X, batch_sizes=[100, 1, 10], repeat=2)        # fewer rows than a batch: rows repeated
    assert t["batch_size"].tolist() == [1, 10, 100] and Recorder.rows == [1, 1, 10, 10, 100, 100]
    assert np.allclose(t["rows_per_second"], t["batch_size"] / t["seconds"]) and np.allclose(t["ms_per_row"] * t["batch_size"], 1000 * t["seconds"])
    fig = plot_scaling(inference=t)
    assert fig.axes[0].get_xscale() == "log" and len(fig.axes) == 1
    with pytest.raises(WorkbenchError, match="batch_sizes"): inference_scaling(Recorder(), X, batch_sizes=[0])
    with pytest.raises(WorkbenchError, match="at least one row"): inference_scaling(Recorder(), X.head(0))
    with pytest.raises(WorkbenchError, match="no method 'predict_proba'"): inference_scaling(Recorder(), X, method="predict_proba")
    with pytest.raises(WorkbenchError, match="training table, an inference table"): plot_scaling()
