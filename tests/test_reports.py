"""mlops_course.reports against a real MLflow store and a real registered model: the objectives, the model card, the risk
checklist, and their HTML pages (written atomically: a failure leaves no partial file and an older page whole). The card and
the checklist on a model the course pipeline made are tested with the pipeline's run, in tests/test_course_pipeline.py."""
import json
import resource
import signal

import numpy as np
import pandas as pd
import pytest

from conftest import raises
from mlops_course.reports import (MISSING_GROUP, as_frequency, confusion_counts, expected_cost, fairness_table, model_card,
                                  rank_by_objective, risk_checklist)

NAME = "churn-model"
CAMPAIGN = {"fn": 500, "fp": 50, "tp": 50}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    "A real SQLite MLflow store: version 1 logged as the chapter does (metrics, seed, data version), version 2 from a bare run."
    import mlflow
    from mlflow.tracking import MlflowClient
    from sklearn.model_selection import train_test_split
    from mlops_course.data import make_churn
    from mlops_course.prep import build_preprocessor
    from mlops_course.registry import log_model
    from mlops_course.train import build_model, evaluate
    from mlops_course.versioning import frame_version, log_data_versions

    tmp = tmp_path_factory.mktemp("reports")
    uri = f"sqlite:///{tmp}/mlflow.db"
    customers = make_churn(3000, seed=3)
    train, test = train_test_split(customers, test_size=0.5, random_state=0, stratify=customers["target"])
    features = [c for c in customers.columns if c not in ("customer_id", "target")]
    model = build_model(build_preprocessor(train[features]), "logistic_regression").fit(train[features], train["target"])
    client = MlflowClient(uri)
    exp = client.create_experiment("reports", artifact_location=(tmp/"artifacts").as_uri())
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_params({"seed": 42, "objective": "lowest expected cost", "threshold": 0.5})
            mlflow.log_metrics({**evaluate(model, test[features], test["target"]), "prevalence": float(test["target"].mean())})
            log_data_versions(client, run.info.run_id, {"train": frame_version(train, "training customers")})
            info = log_model(model, train[features].head(20), registered_model_name=NAME)
        client.update_registered_model(NAME, description="Which customers will cancel their contract.")
        client.set_registered_model_tag(NAME, "positive", "customers who will leave")
        source = client.get_model_version(NAME, "1").source  # models:/m-…: resolved in the process-wide store, so it stays set here
        bare = client.create_run(exp, run_name="bare")  # no metrics, no seed, no data version
        client.create_model_version(NAME, source, run_id=bare.info.run_id)
        client.create_registered_model("undescribed")
        client.create_model_version("undescribed", source, run_id=run.info.run_id)
        # as the pipeline's register step records a model: its run holds no metrics; the test metrics are the version's test_* tags
        tagged = client.create_run(exp, run_name="register")
        client.log_param(tagged.info.run_id, "seed", "42"); client.log_param(tagged.info.run_id, "metric", "recall")
        client.create_registered_model("tagged")
        client.create_model_version("tagged", source, run_id=tagged.info.run_id, description="Which customers will cancel (said by the version).")
        tags = {f"test_{k}": f"{v:.4f}" for k, v in evaluate(model, test[features], test["target"]).items()}
        for k, v in {**tags, "test_prevalence": f"{test['target'].mean():.4f}", "gate.decision": "promote", "gate.reason": "recall 0.6 >= 0.5"}.items():
            client.set_model_version_tag("tagged", "1", k, v)
    finally: mlflow.set_tracking_uri(before)
    return dict(uri=uri, client=client, train=train, test=test, model=model, features=features, run_id=run.info.run_id,
                metrics=evaluate(model, test[features], test["target"]), tmp=tmp, info=info)


# ---------------------------------------------------------------- objectives (no store)

def test_expected_cost_counts_every_cell_at_its_price():
    y, p = [0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 0, 1, 1, 1]
    assert confusion_counts(y, p) == {"tn": 2, "fp": 1, "fn": 1, "tp": 3}
    assert expected_cost(y, p, CAMPAIGN) == pytest.approx((50 + 500 + 3 * 50) / 7)
    assert expected_cost(y, p, {"tp": -100, "tn": 1}) == pytest.approx((3 * -100 + 2) / 7)  # gains are negative costs
    assert expected_cost(np.array(y, bool), np.array(p, bool), CAMPAIGN) == expected_cost(y, p, CAMPAIGN)


@pytest.mark.parametrize("args, fragments", [
    (([0, 1], [0, 1], {"fm": 5}), ("'fm'", "tn, fp, fn, tp")),
    (([0, 1], [0, 1], {"fn": "500"}), ("'fn'", "finite number")),
    (([0, 1], [0, 1], {"fn": float("inf")}), ("'fn'",)),
    (([0, 1], [0, 1], {}), ("cost matrix",)),
    (([0, 1], [0, 1], [500, 50]), ("cost matrix",)),
    (([0, 3], [0, 1], CAMPAIGN), ("y_true", "only 0 and 1", "3")),
    (([0, 1], ["a", "b"], CAMPAIGN), ("y_pred", "only 0 and 1")),
    (([0, 1], [0, 1, 0], CAMPAIGN), ("2 labels", "3")),
    (([], [], CAMPAIGN), ("non-empty",)),
])
def test_expected_cost_refuses_bad_input(args, fragments):
    raises(lambda: expected_cost(*args), *fragments)


def test_rank_by_objective_ranks_the_same_candidates_differently():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    careful = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # one alert, always right
    eager = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0])    # finds every leaver, many false alarms
    scores = pd.DataFrame({"careful": careful * 0.9, "eager": eager * 0.8 + 0.1})  # scores, turned into decisions at the threshold
    table = rank_by_objective(scores, y, {"precision": "precision", "cost": CAMPAIGN, "recall": "recall"})
    assert list(table.index) == ["careful", "eager"]                      # best first under the first objective
    assert table.loc["careful", "precision"] == 1.0 and table.loc["eager", "precision"] == pytest.approx(4 / 7)
    assert table["cost rank"].to_dict() == {"careful": 2, "eager": 1}
    assert table.loc["eager", "cost"] == pytest.approx(expected_cost(y, eager, CAMPAIGN))
    assert table.attrs["lower_is_better"] == {"precision": False, "cost": True, "recall": False}
    # the threshold decides: at 0.95 nobody is flagged, so both have recall 0 and share rank 1
    high = rank_by_objective(scores, y, ["recall"], threshold=0.95)
    assert high["recall"].tolist() == [0.0, 0.0] and high["recall rank"].tolist() == [1, 1]


@pytest.mark.parametrize("args, kw, fragments", [
    (({"a": [1, 0]}, [1, 0], {"x": "auc"}), {}, ("objective 'x'", "'auc'", "accuracy, precision, recall, f1")),
    (({"a": [1, 0]}, [1, 0], {"x": {"fm": 1}}), {}, ("'fm'",)),
    (({"a": ["yes", "no"]}, [1, 0], ["recall"]), {}, ("candidate 'a'", "numbers")),
    (({"a": [1, np.nan]}, [1, 0], ["recall"]), {}, ("candidate 'a'", "none missing")),
    (({}, [1, 0], ["recall"]), {}, ("at least one candidate",)),
    (({"a": [1, 0]}, [1, 0], {}), {}, ("objectives must be",)),
    (({"a": [1, 0]}, [1, 0], ["recall"]), {"threshold": "high"}, ("threshold",)),
])
def test_rank_by_objective_refuses_bad_input(args, kw, fragments):
    raises(lambda: rank_by_objective(*args, **kw), *fragments)


def test_as_frequency_gives_simple_natural_frequencies():
    assert [as_frequency(s) for s in (0.5, 0.34, 0.7, 0.8, 0.95, 0.46, 0.016, 0, 1)] == [
        (1, 2), (1, 3), (7, 10), (4, 5), (19, 20), (9, 20), (2, 100), (0, 10), (10, 10)]
    for bad in (-0.1, 1.5, "0.5", True, None):
        raises(lambda: as_frequency(bad), "not a share")


def test_fairness_table_per_group_with_missing_and_small_groups():
    t = fairness_table([1, 1, 0, 1, 1, 0, 1], [1, 1, 1, 1, 0, 0, 0], pd.Series(["b", "b", "b", "a", "a", "a", None]), min_positives=2)
    assert t.index.tolist() == ["a", "b", MISSING_GROUP]                  # sorted, the missing group last
    assert t["recall"].tolist() == [0.5, 1.0, 0.0] and t["judged"].tolist() == [True, True, False]
    assert t.loc["a", "alert_rate"] == pytest.approx(1 / 3) and t["positives"].tolist() == [2, 2, 1]
    bands = pd.Series(pd.Categorical(["old", "young", "young"], categories=["young", "old"]))
    assert fairness_table([1, 1, 0], [1, 0, 0], bands, 1).index.tolist() == ["young", "old"]   # a categorical keeps its order
    raises(lambda: fairness_table([1, 0], [1, 0], ["a"]), "must match")


# ---------------------------------------------------------------- the model card (real store)

def test_model_card_speaks_from_the_registry_and_the_run(store):
    from mlops_course.registry import promote
    card = model_card(NAME, version=1, tracking_uri=store["uri"], limits=["Not tested on business customers."])
    m = store["metrics"]
    k, n = as_frequency(m["recall"])
    assert card.how_well[0] == f"It finds about {k} of every {n} customers who will leave (recall {m['recall']:.2f})."
    k, n = as_frequency(1 - m["precision"])
    assert f"About {k} in {n} of its alerts" in card.how_well[1] and f"(precision {m['precision']:.2f})" in card.how_well[1]
    assert any("ROC AUC" in s for s in card.how_well) and any("1 in 3 cases" in s for s in card.how_well)   # prevalence ~ 1/3
    assert card.predicts == "Which customers will cancel their contract." and card.run_id == store["run_id"]
    assert card.data.loc[0, "rows"] == len(store["train"]) and card.limits == ["Not tested on business customers."]
    page = card.to_html()
    assert page.startswith("<!DOCTYPE html>") and "Not tested on business customers." in page and "lowest expected cost" in page
    assert "not deployed" in page and "<script" not in page and "src=" not in page      # self-contained
    promote(NAME, 1, "prod", tracking_uri=store["uri"])
    by_alias = model_card(NAME, alias="prod", tracking_uri=store["uri"], predicts="Who leaves.", positive="leavers")
    assert by_alias.version == "1" and by_alias.aliases == ["prod"] and "in use as @prod" in by_alias.to_html()
    assert by_alias.predicts == "Who leaves." and by_alias.how_well[0].endswith(f"leavers (recall {m['recall']:.2f}).")


def test_model_card_errors_say_what_to_record(store):
    uri = store["uri"]
    raises(lambda: model_card(NAME, version=9, tracking_uri=uri), "no version 9", "versions: 1, 2")
    raises(lambda: model_card(NAME, alias="staging", tracking_uri=uri), "no alias 'staging'")
    raises(lambda: model_card("nope", version=1, tracking_uri=uri), "no registered model 'nope'", NAME)
    raises(lambda: model_card(NAME, version=1, alias="prod", tracking_uri=uri), "either version= or alias=", "both")
    raises(lambda: model_card(NAME, version=2, tracking_uri=uri), "has no metric 'recall', 'precision'", "its metrics are: none")
    raises(lambda: model_card("undescribed", version=1, tracking_uri=uri), "no description", "update_registered_model")
    assert model_card("undescribed", version=1, predicts="Churn.", tracking_uri=uri).positive == "positive cases"
    raises(lambda: model_card(NAME, version=1, limits="one sentence", tracking_uri=uri), "limits must be a list")
    raises(lambda: model_card(NAME, version=1, limits=["ok", ""], tracking_uri=uri), "limits must be a list")


def test_model_card_reads_the_test_metrics_a_pipeline_copies_onto_the_version(store):
    "A version whose run has no metrics, tagged as the register step does: the card reads the tags (gates.metrics_of), the objective and the gate."
    card = model_card("tagged", version=1, tracking_uri=store["uri"])
    m = store["metrics"]
    assert card.metrics["recall"] == float(f"{m['recall']:.4f}") and "prevalence" in card.metrics
    assert card.predicts == "Which customers will cancel (said by the version)."     # no model description: the version's
    assert card.objective.startswith("recall (find as many of the positive cases as possible")
    assert card.gate == "promoted (recall 0.6 >= 0.5)" and "Quality gate: promoted" in card.to_html()
    assert any("1 in 3 cases" in s for s in card.how_well)                           # prevalence, from test_prevalence
    assert card.limits == ["The data it was trained on was not recorded: nobody can check or reproduce it."]


# ---------------------------------------------------------------- the risk checklist (real store)

def _status(checklist) -> dict:
    return checklist.items.set_index("item")["status"].to_dict()


def test_risk_checklist_passes_a_well_recorded_model_and_warns_without_production_data(store):
    from mlops_course.core import file_sha256
    age = pd.cut(store["test"]["age"], [18, 45, 91], right=False, labels=["18-44", "45+"]).rename("age band")
    c = risk_checklist(NAME, store["train"], store["test"], age, version=1, tracking_uri=store["uri"])
    assert _status(c) == {"data contract": "pass", "data version": "pass", "reproducibility": "pass", "drift": "warn", "fairness": "pass"}, c.items.evidence.tolist()
    assert c.verdict == "ready with conditions" and c.warnings == ["drift"] and c.failed == []
    assert c.conditions[0].startswith("drift (warn): not checked")
    assert c.fairness.index.tolist() == ["18-44", "45+", MISSING_GROUP] and c.group == "age band"
    local = store["tmp"]/"artifacts"  # the model file hashed is the registered one
    assert c.model_sha256 in {file_sha256(p) for p in local.rglob("model.skops")}
    # the same data, the same hash; a production batch from the same world: no drift
    from mlops_course.data import make_churn
    calm = risk_checklist(NAME, store["train"], store["test"], "region", version=1, current=make_churn(2000, seed=11), tracking_uri=store["uri"])
    assert _status(calm)["drift"] == "pass" and calm.drift is not None and not calm.drift["drifted"].any()


def test_risk_checklist_fails_what_broke(store):
    from mlops_course.data import make_churn
    uri, train, test = store["uri"], store["train"], store["test"]
    # the training data changed since the run recorded it; production moved; other test rows than the run's
    c = risk_checklist(NAME, train.drop_duplicates(subset="customer_id").iloc[1:], test.iloc[::2], "contract", version=1,
                       current=make_churn(2000, seed=12, drift=1.0), tracking_uri=uri)
    s = _status(c)
    assert s["data version"] == "fail" and "is not what run" in c.items.set_index("item").loc["data version", "evidence"]
    assert s["reproducibility"] == "fail" and "recorded" in c.items.set_index("item").loc["reproducibility", "evidence"]
    assert s["drift"] == "fail" and "features drifted" in c.items.set_index("item").loc["drift", "evidence"]
    assert s["fairness"] == "fail" and c.verdict == "not ready"       # the model finds monthly leavers far more often
    assert set(c.failed) == {"data version", "reproducibility", "drift", "fairness"}
    # a broken contract: ages out of range
    bad = train.copy(); bad.loc[bad.index[:5], "age"] = 150
    assert _status(risk_checklist(NAME, bad, test, "region", version=1, tracking_uri=uri))["data contract"] == "fail"
    # a version whose run recorded nothing: no data version, no metrics, no seed
    bare = risk_checklist(NAME, train, test, "region", version=2, tracking_uri=uri)
    assert _status(bare)["data version"] == "fail" and "recorded no data version" in bare.items.set_index("item").loc["data version", "evidence"]
    assert _status(bare)["reproducibility"] == "fail" and "recorded none of the test metrics" in bare.items.set_index("item").loc["reproducibility", "evidence"]
    # a stricter fairness rule turns a pass into a fail; a group too small to judge warns
    region = risk_checklist(NAME, train, test, "region", version=1, thresholds={"recall_gap": 0.0}, tracking_uri=uri)
    assert _status(region)["fairness"] == "fail"
    few = risk_checklist(NAME, train, test, "region", version=1, thresholds={"min_positives": 10_000}, tracking_uri=uri)
    assert _status(few)["fairness"] == "warn" and "too few" in few.items.set_index("item").loc["fairness", "evidence"]


def test_risk_checklist_on_version_tags_and_a_group_function(store):
    "Reproducibility against the version's test_* tags (4 decimals); a group computed from the test rows; a changed tag fails."
    from mlops_course.data import make_churn
    uri, train, test = store["uri"], store["train"], store["test"]
    def bands(rows): return pd.cut(rows["age"], [18, 45, 91], right=False, labels=["18-44", "45+"]).rename("age band")
    c = risk_checklist("tagged", train, test, bands, version=1, current=make_churn(2000, seed=11), tracking_uri=uri)
    s = _status(c)
    assert s["reproducibility"] == "pass" and "the version's test_* tags" in c.items.set_index("item").loc["reproducibility", "evidence"]
    assert s["data version"] == "fail" and c.group == "age band" and c.fairness.index.tolist() == ["18-44", "45+", MISSING_GROUP]
    store["client"].set_model_version_tag("tagged", "1", "test_recall", f"{store['metrics']['recall'] + 0.001:.4f}")
    try:
        off = risk_checklist("tagged", train, test, "region", version=1, tracking_uri=uri)
        assert _status(off)["reproducibility"] == "fail" and "recall" in off.items.set_index("item").loc["reproducibility", "evidence"]
    finally: store["client"].set_model_version_tag("tagged", "1", "test_recall", f"{store['metrics']['recall']:.4f}")
    raises(lambda: risk_checklist("tagged", train, test, lambda rows: rows["shoe"], version=1, tracking_uri=uri), "group: the function failed", "shoe")
    # a hand-logged run names no file: without data= or test= the checklist says what to give
    raises(lambda: risk_checklist(NAME, None, test, "region", version=1, tracking_uri=uri), "give data=")
    raises(lambda: risk_checklist(NAME, train, None, "region", version=1, tracking_uri=uri), "give test=")
    raises(lambda: risk_checklist(NAME, train, test, version=1, tracking_uri=uri), "needs group=")


def test_the_course_pipeline_has_one_business_objective(tmp_path):
    "course.yaml's shared `metric` reaches every step that judges a model; one override changes it for all of them."
    from conftest import ROOT
    from mlops_course.config import load_settings
    from mlops_course.pipeline import load_spec
    settings = load_settings(env={"MLOPS_COURSE_WORK_DIR": str(tmp_path/"work")}, create_work_dir=False)
    def objectives(*overrides):
        spec = load_spec(ROOT/"nbs/pipeline/course.yaml", list(overrides), settings)
        return {n: s.parameters["metric"] for n, s in spec.steps.items() if "metric" in s.parameters}
    assert objectives() == {"train": "f1", "gate": "f1", "monitor": "f1"}
    assert objectives("metric=recall") == {"train": "recall", "gate": "recall", "monitor": "recall"}
    assert objectives("metric=recall", "gate.metric=precision")["gate"] == "precision"   # a step's own value still wins


def test_the_train_step_refuses_an_objective_the_pipeline_cannot_judge(tmp_path, monkeypatch):
    "train.ipynb, run in a real kernel with metric='roc', stops at once with an error naming the step, the parameter and the valid values."
    from conftest import ROOT
    from mlops_course.notebooks import execute_notebook
    monkeypatch.setenv("MLOPS_COURSE_WORK_DIR", str(tmp_path/"work"))
    run = execute_notebook(ROOT/"nbs/pipeline/train.ipynb", tmp_path/"train.ipynb", {"metric": "roc"}, cwd=tmp_path)
    assert run.status == "failed" and "step train: parameter metric = 'roc'" in run.error and "accuracy, precision, recall, f1" in run.error, run.error


def test_risk_checklist_refuses_bad_input(store):
    uri, train, test = store["uri"], store["train"], store["test"]
    raises(lambda: risk_checklist(NAME, train, test, "shoe_size", version=1, tracking_uri=uri), "no column 'shoe_size'")
    raises(lambda: risk_checklist(NAME, train, test, test["region"].iloc[1:], version=1, tracking_uri=uri), "one per test row")
    raises(lambda: risk_checklist(NAME, train, test, ["north"], version=1, tracking_uri=uri), "column name", "Series", "function")
    raises(lambda: risk_checklist(NAME, train.drop(columns="target"), test, "region", version=1, tracking_uri=uri), "data has no target column 'target'")
    raises(lambda: risk_checklist(NAME, train, test.drop(columns="tenure_months"), "region", version=1, tracking_uri=uri), "tenure_months")
    raises(lambda: risk_checklist(NAME, train, "test.csv", "region", version=1, tracking_uri=uri), "test must be a pandas DataFrame")
    raises(lambda: risk_checklist(NAME, train, test, "region", version=1, current="batch.parquet", tracking_uri=uri), "current must be")
    raises(lambda: risk_checklist(NAME, train, test, "region", version=1, thresholds={"gap": 0.1}, tracking_uri=uri), "'gap'", "recall_gap")
    raises(lambda: risk_checklist(NAME, train, test, "region", version=1, thresholds={"recall_gap": -1}, tracking_uri=uri), "recall_gap", ">= 0")
    raises(lambda: risk_checklist(NAME, train, test, "region", version=5, tracking_uri=uri), "no version 5")
    c = risk_checklist(NAME, train, test, "region", version=1, tracking_uri=uri)
    raises(lambda: model_card(NAME, version=2, checklist=c, predicts="x", tracking_uri=uri), "the checklist is for 'churn-model' version 1")


# ---------------------------------------------------------------- logging and pages

def test_card_and_checklist_are_logged_on_the_run_and_the_verdict_on_the_version(store):
    from mlflow.artifacts import download_artifacts
    uri, client = store["uri"], store["client"]
    checklist = risk_checklist(NAME, store["train"], store["test"], "contract", version=1, tracking_uri=uri)
    card = model_card(NAME, version=1, checklist=checklist, tracking_uri=uri)
    assert any(l.startswith("fairness (fail): recall per contract") for l in card.limits)   # the checklist's findings are known limits
    assert card.log() == "reports/model_card.html" and checklist.log() == "reports/risk_checklist.html"
    run = store["run_id"]
    assert {a.path for a in client.list_artifacts(run, "reports")} == {"reports/model_card.html", "reports/risk_checklist.html", "reports/risk_checklist.json"}
    logged = download_artifacts(run_id=run, artifact_path="reports/risk_checklist.json", tracking_uri=uri)
    record = json.loads(open(logged).read())
    assert record["verdict"] == "not ready" and [i["item"] for i in record["items"] if i["status"] == "fail"] == checklist.failed
    html = open(download_artifacts(run_id=run, artifact_path="reports/model_card.html", tracking_uri=uri), encoding="utf-8").read()
    assert html == card.to_html() and "verdict: <b>not ready</b>" in html
    tags = client.get_model_version(NAME, "1").tags
    assert tags["risk.verdict"] == "not ready" and tags["risk.failed"] == "fairness"


def test_pages_are_written_atomically(store, tmp_path):
    card = model_card(NAME, version=1, tracking_uri=store["uri"])
    path = card.write_html(tmp_path/"cards"/"card.html")
    first = path.read_bytes()
    assert first.decode().startswith("<!DOCTYPE html>") and len(first) > 2000

    def leftovers(): return sorted(p.name for p in path.parent.iterdir() if p.name != "card.html")

    # the disk fills while writing (a file-size limit, as a full disk would): the older card stays whole, no partial file
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    try:
        with pytest.raises(OSError): model_card(NAME, version=1, limits=["A new limit."], tracking_uri=store["uri"]).write_html(path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert path.read_bytes() == first and leftovers() == []
    # the page cannot be built: the file is not touched
    broken = model_card(NAME, version=1, tracking_uri=store["uri"])
    broken.metrics = {"accuracy": 0.9}
    with pytest.raises(KeyError): broken.write_html(path)
    assert path.read_bytes() == first and leftovers() == []
    # bad paths: clear errors, nothing written
    raises(lambda: card.write_html(tmp_path/"cards"/"card.pdf"), "card.pdf", ".html")
    (tmp_path/"cards"/"folder.html").mkdir()
    raises(lambda: card.write_html(tmp_path/"cards"/"folder.html"), "is a folder")
    assert leftovers() == ["folder.html"]
    # and a good write replaces the page whole
    checklist = risk_checklist(NAME, store["train"], store["test"], "region", version=1, tracking_uri=store["uri"])
    assert checklist.write_html(path).read_text(encoding="utf-8") == checklist.to_html() and leftovers() == ["folder.html"]
