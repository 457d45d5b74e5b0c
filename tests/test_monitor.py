"Prediction monitoring: bad input through the public functions, agreement with SciPy, PSI by hand, and a million rows."
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import raises
from mlops_course.monitor import (COLUMNS, THRESHOLDS, drift_table, monitoring_html, performance_decay, plot_distributions,
                                  plot_drift_history, prediction_drift, retrain_decision)


def batches(n_ref=2_000, n_cur=1_500, shift=0.0, seed=0):
    "A reference and a current batch with numeric, integer-count and categorical features."
    rng = np.random.default_rng(seed)
    def one(n, s):
        return pd.DataFrame({"x": rng.normal(s, 1, n), "calls": rng.poisson(1 + s, n).astype(float),
                             "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], n, p=[0.5 - s / 4, 0.3, 0.2 + s / 4])),
                             "city": rng.choice(["rio", "sp", "bh"], n).astype(object)})
    return one(n_ref, 0.0), one(n_cur, shift)


# ---- bad input: a clear error naming the column/batch, or a defined result with a note ----

def test_a_column_missing_from_one_batch_is_named_with_the_batch():
    ref, cur = batches()
    raises(lambda: drift_table(ref, cur.drop(columns="plan")), "'plan'", "current", "x, calls")
    raises(lambda: drift_table(ref.drop(columns="x"), cur, columns=["x", "plan"]), "'x'", "reference")


def test_empty_batches_and_non_frames_are_refused():
    ref, cur = batches()
    raises(lambda: drift_table(ref.iloc[:0], cur), "reference batch is empty")
    raises(lambda: drift_table(ref, cur.iloc[:0]), "current batch is empty")
    raises(lambda: drift_table(ref, cur["x"]), "current", "DataFrame")
    raises(lambda: drift_table(ref, cur, columns=[]), "no columns")


def test_mismatched_dtypes_name_the_column_and_both_kinds():
    ref, cur = batches()
    msg = raises(lambda: drift_table(ref, cur.assign(x=cur["x"].astype(str))), "'x'", "numeric", "categorical", "pd.to_numeric")
    assert "float64" in msg
    raises(lambda: drift_table(ref.assign(t=pd.Timestamp("2024-01-01")), cur.assign(t=pd.Timestamp("2024-02-01")), columns=["t"]),
           "'t'", "datetime", "columns=[...]")


def test_duplicate_column_names_and_bad_arguments_are_refused():
    ref, cur = batches()
    dup = pd.concat([cur, cur[["x"]]], axis=1)
    raises(lambda: drift_table(ref, dup, columns=["x"]), "'x'", "more than once", "current")
    raises(lambda: drift_table(ref, cur, bins=1), "bins")
    raises(lambda: drift_table(ref, cur, thresholds={"pvalue": 0.05}), "'pvalue'", "p_value")
    raises(lambda: drift_table(ref, cur, thresholds={"drifted_share": 2}), "drifted_share")


def test_all_null_columns_give_notes_not_bare_nans():
    ref, cur = batches()
    ref = ref.assign(gone=1.0, never=np.nan, late=np.nan)
    cur = cur.assign(gone=None, never=None, late=2.0)   # None makes an object column: its dtype must not matter when all null
    t = drift_table(ref, cur, columns=["gone", "never", "late", "x"])
    assert t.loc["gone", "note"].startswith("all null in current") and t.loc["gone", "drifted"] and t.loc["gone", "null_cur"] == 1
    assert t.loc["late", "note"].startswith("all null in reference") and t.loc["late", "drifted"]
    assert t.loc["never", "note"] == "all null in both batches" and not t.loc["never", "drifted"] and t.loc["never", "psi"] == 0
    nan_rows = t[["psi", "statistic", "p_value"]].isna().any(axis=1)
    assert nan_rows.sum() == 2 and (t.loc[nan_rows, "note"] != "").all()
    assert t.loc["x", "note"] == "" and not np.isnan(t.loc["x", "psi"])


def test_constant_columns_have_a_defined_result():
    ref, cur = batches()
    t = drift_table(ref.assign(k=3.0, c="a"), cur.assign(k=3.0, c="a"), columns=["k", "c"])
    assert (t["psi"] == 0).all() and (t["statistic"] == 0).all() and (t["p_value"] == 1).all()
    assert (t["note"] == "constant in both batches").all() and not t["drifted"].any()
    for moved in (4.0, 2.0):   # a constant reference has bins below, equal and above its value: moves either way are seen
        t = drift_table(ref.assign(k=3.0), cur.assign(k=moved), columns=["k"])
        assert t.loc["k", "drifted"] and t.loc["k", "psi"] > 5 and t.loc["k", "statistic"] == 1
        assert t.loc["k", "note"] == "constant in reference"


def test_infinite_values_count_as_missing_with_a_note():
    ref, cur = batches()
    cur = cur.assign(x=cur["x"].where(cur.index >= 10, np.inf))
    t = drift_table(ref, cur, columns=["x"])
    assert t.loc["x", "n_cur"] == len(cur) - 10 and np.isclose(t.loc["x", "null_cur"], 10 / len(cur))
    assert "infinite" in t.loc["x", "note"] and np.isfinite(t.loc["x", "psi"])


def test_unseen_categories_are_named_and_counted():
    ref, cur = batches()
    cur = cur.assign(city=np.where(np.arange(len(cur)) % 5 == 0, "recife", cur["city"]).astype(object))
    t = drift_table(ref, cur, columns=["city"])
    assert "unseen in reference: 'recife'" in t.loc["city", "note"] and t.loc["city", "drifted"]
    assert t.loc["city", "psi"] > 0.25   # 20% of rows in a category the reference never saw


def test_prediction_and_performance_inputs_are_checked():
    scores = np.random.default_rng(0).random(100)
    raises(lambda: prediction_drift(np.c_[1 - scores, scores], scores), "reference_pred", "proba[:, 1]")
    raises(lambda: prediction_drift(scores, scores, kind="ordinal"), "'ordinal'", "numeric")
    raises(lambda: prediction_drift(scores, []), "current batch is empty")
    y = (scores > 0.5).astype(int)
    raises(lambda: performance_decay(y, y, y, y, metric="auc"), "'auc'", "roc_auc")
    raises(lambda: performance_decay(y, y[:-1], y, y), "pred_ref", "100", "99")
    raises(lambda: performance_decay(y, y, y[:0], y[:0]), "y_cur is empty")
    raises(lambda: performance_decay(y, scores, np.ones(50, int), scores[:50], metric="roc_auc"), "roc_auc", "cur")
    raises(lambda: performance_decay(pd.Series(y).where(y > 0), y, y, y), "missing")


def test_decision_and_plots_refuse_what_they_cannot_read():
    raises(lambda: retrain_decision(pd.DataFrame({"x": [1]})), "drift_table", "psi", "drifted")
    t = drift_table(*batches())
    raises(lambda: retrain_decision(t, prediction={"drifted": True}), "prediction_drift")
    raises(lambda: retrain_decision(t, decay={"drop": 1}), "performance_decay")
    raises(lambda: plot_drift_history(pd.DataFrame({"when": [1], "psi": [0.1]})), "feature")
    raises(lambda: plot_drift_history(pd.DataFrame(columns=["when", "feature", "psi"])), "empty")
    raises(lambda: plot_distributions(*batches(), columns=["nope"]), "'nope'")


# ---- agreement with SciPy ----

@pytest.mark.parametrize("seed", range(6))
def test_ks_equals_scipy_on_random_data(seed):
    rng = np.random.default_rng(seed)
    sizes = [(int(rng.integers(1, 60)), int(rng.integers(1, 60))), (int(rng.integers(500, 9_000)), int(rng.integers(500, 9_000))),
             (int(rng.integers(10_001, 40_000)), int(rng.integers(2_000, 40_000)))]
    for n, m in sizes:   # tiny and small (SciPy's exact p-value), large (asymptotic)
        ref = pd.DataFrame({"normal": rng.normal(0, 1, n), "rounded": rng.normal(0, 1, n).round(1),
                            "counts": rng.poisson(2, n).astype(float), "f32": rng.gamma(2, 3, n).astype(np.float32)})
        cur = pd.DataFrame({"normal": rng.normal(rng.uniform(-0.2, 0.2), rng.uniform(0.9, 1.2), m),
                            "rounded": rng.normal(0.05, 1, m).round(1),
                            "counts": rng.poisson(rng.uniform(1.8, 2.4), m).astype(float), "f32": rng.gamma(2, 3.1, m).astype(np.float32)})
        t = drift_table(ref, cur)
        for col in ref.columns:
            expected = stats.ks_2samp(ref[col], cur[col])
            assert t.loc[col, "statistic"] == expected.statistic, (n, m, col)
            assert t.loc[col, "p_value"] == expected.pvalue, (n, m, col)


@pytest.mark.parametrize("seed", range(4))
def test_chi2_equals_scipy_contingency_on_random_categories(seed):
    rng = np.random.default_rng(seed)
    cats = list("abcdefg")
    n, m = int(rng.integers(50, 5_000)), int(rng.integers(50, 5_000))
    ref = pd.DataFrame({"c": rng.choice(cats[:5], n, p=rng.dirichlet(np.ones(5)))})
    cur = pd.DataFrame({"c": rng.choice(cats, m, p=rng.dirichlet(np.ones(7)))})   # two categories the reference never has
    t = drift_table(ref, cur)
    table = pd.crosstab(np.r_[np.zeros(n), np.ones(m)], np.r_[ref["c"], cur["c"]])
    stat, p, dof, _ = stats.chi2_contingency(table.to_numpy(), correction=False)
    assert np.isclose(t.loc["c", "statistic"], stat, rtol=1e-10) and np.isclose(t.loc["c", "p_value"], p, rtol=1e-8, atol=1e-300)
    assert t.loc["c", "test"] == "chi2" and t.loc["c", "kind"] == "categorical" and "unseen in reference" in t.loc["c", "note"]


# ---- PSI: known values ----

def test_psi_known_values_by_hand():
    half = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 50})
    quarter = pd.DataFrame({"c": ["a"] * 25 + ["b"] * 75})
    assert np.isclose(drift_table(half, quarter).loc["c", "psi"], 0.25 * np.log(2) + 0.25 * np.log(1.5))   # 0.2747
    assert drift_table(half, half).loc["c", "psi"] == 0
    # numeric: 1..100 has decile cuts 10, 20, ..., 90; a batch of 51..100 twice fills only the upper five bins
    ref, cur = pd.DataFrame({"v": np.arange(1.0, 101.0)}), pd.DataFrame({"v": np.r_[np.arange(51.0, 101.0), np.arange(51.0, 101.0)]})
    eps = 1e-4
    expected = 5 * (eps - 0.1) * np.log(eps / 0.1) + 5 * (0.2 - 0.1) * np.log(0.2 / 0.1)
    assert np.isclose(drift_table(ref, cur).loc["v", "psi"], expected)
    # a category the reference never saw: its share is floored at epsilon
    new = pd.DataFrame({"c": ["a"] * 45 + ["b"] * 45 + ["z"] * 10})
    expected = 2 * (0.45 - 0.5) * np.log(0.45 / 0.5) + (0.1 - eps) * np.log(0.1 / eps)
    assert np.isclose(drift_table(half, new).loc["c", "psi"], expected)
    # nulls do not enter the shares: they are reported as null_ref / null_cur
    with_nulls = pd.DataFrame({"c": ["a"] * 25 + ["b"] * 75 + [None] * 100})
    t = drift_table(half, with_nulls)
    assert np.isclose(t.loc["c", "psi"], 0.25 * np.log(2) + 0.25 * np.log(1.5)) and t.loc["c", "null_cur"] == 0.5
    assert t.loc["c", "drifted"] and "missing share 0% → 50%" in t.loc["c", "note"]


def test_bins_change_the_numeric_psi_resolution():
    ref, cur = batches(shift=0.5)
    coarse, fine = drift_table(ref, cur, columns=["x"], bins=4), drift_table(ref, cur, columns=["x"], bins=20)
    assert coarse.loc["x", "psi"] != fine.loc["x", "psi"] and coarse.loc["x", "statistic"] == fine.loc["x", "statistic"]


# ---- verdicts, decision, report ----

def test_the_drift_rule_needs_size_and_significance():
    ref, cur = batches(n_ref=200, n_cur=200, seed=3)   # same world, small samples: PSI is noisy, the test is not fooled
    loose = drift_table(ref, cur, thresholds={"psi": 0.0})
    assert not loose["drifted"].any()
    ref, cur = batches(shift=0.6)
    t = drift_table(ref, cur)
    assert list(t.columns) == COLUMNS and t.loc["x", "drifted"] and t.loc["calls", "drifted"] and not t.loc["city", "drifted"]
    assert not drift_table(ref, cur, thresholds={"psi": 50}).loc[["x", "calls"], "drifted"].any()


def test_retrain_decision_fires_on_each_signal_alone():
    ref, cur = batches()
    calm = drift_table(ref, cur)
    assert retrain_decision(calm) == (False, [])
    moved = drift_table(*batches(shift=0.6))
    fire, reasons = retrain_decision(moved)
    assert fire and reasons[0].startswith(f"{moved['drifted'].sum()} of 4 features drifted")
    assert retrain_decision(moved, thresholds={"drifted_share": 1.0}) == (False, [])
    rng = np.random.default_rng(1)
    pred = prediction_drift(rng.random(3_000), rng.random(3_000) ** 3)
    fire, reasons = retrain_decision(calm, prediction=pred)
    assert fire and reasons == [r for r in reasons if "predictions drifted" in r] and len(reasons) == 1
    decay = {"metric": "f1", "reference": 0.8, "current": 0.7, "drop": 0.1}
    fire, reasons = retrain_decision(calm, decay=decay)
    assert fire and "f1 went from 0.800 to 0.700" in reasons[0]
    assert retrain_decision(calm, decay=decay, thresholds={"performance_drop": 0.2}) == (False, [])


def test_prediction_drift_scores_and_labels():
    rng = np.random.default_rng(2)
    s_ref, s_cur = rng.beta(2, 5, 4_000), rng.beta(2, 5, 3_000)
    calm = prediction_drift(s_ref, s_cur)
    assert calm.name == "prediction" and calm["test"] == "ks" and not calm["drifted"]
    assert calm["statistic"] == stats.ks_2samp(s_ref, s_cur).statistic
    labels = prediction_drift((s_ref > 0.3).astype(int), (rng.beta(4, 3, 3_000) > 0.3).astype(int))
    assert labels["test"] == "chi2" and labels["kind"] == "categorical" and labels["drifted"]
    assert prediction_drift(pd.Series(s_ref), pd.DataFrame({"p": s_cur}))["n_cur"] == 3_000


def test_performance_decay_direction_and_values():
    from sklearn.metrics import f1_score, mean_absolute_error
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 1_000)
    good, bad = np.where(rng.random(1_000) < 0.9, y, 1 - y), np.where(rng.random(1_000) < 0.7, y, 1 - y)
    d = performance_decay(y, good, y, bad)
    assert d["metric"] == "f1" and np.isclose(d["reference"], f1_score(y, good)) and np.isclose(d["drop"], f1_score(y, good) - f1_score(y, bad))
    assert d["drop"] > 0.1
    t, p_ok, p_worse = rng.normal(size=500), rng.normal(size=500), rng.normal(size=500) * 3
    m = performance_decay(t, t + p_ok * 0.1, t, t + p_worse * 0.1, metric="mae")   # lower is better: drop = current - reference
    assert m["drop"] > 0 and np.isclose(m["drop"], mean_absolute_error(t, t + p_worse * 0.1) - mean_absolute_error(t, t + p_ok * 0.1))
    probs = np.clip(y * 0.6 + 0.2, 0, 1)
    g = performance_decay(y, probs, y, np.clip(probs - 0.15, 0, 1), metric="calibration_gap")
    lower = np.clip(probs - 0.15, 0, 1)
    assert np.isclose(g["reference"], abs(probs.mean() - y.mean())) and np.isclose(g["current"], abs(lower.mean() - y.mean()))
    assert g["drop"] > 0.1 and not g["higher_is_better"]


def test_monitoring_html_is_one_self_contained_page():
    ref, cur = batches()
    calm = drift_table(ref, cur)
    page = monitoring_html(calm, ref, cur)
    assert "Retrain: no" in page and page.count("data:image/png;base64,") == 1 and "class='drifted'" not in page
    moved_ref, moved_cur = batches(shift=0.6)
    moved = drift_table(moved_ref, moved_cur)
    history = pd.DataFrame({"when": np.repeat(pd.date_range("2024-01-01", periods=3, freq="W"), 2),
                            "feature": ["x", "calls"] * 3, "psi": [0.01, 0.02, 0.1, 0.15, 0.3, 0.4]})
    page = monitoring_html(moved, moved_ref, moved_cur, history=history, title="<Churn> & co")
    assert "Retrain: yes" in page and page.count("data:image/png;base64,") == 2 and "class='drifted'" in page
    assert "&lt;Churn&gt; &amp; co" in page and "<Churn>" not in page
    fig = plot_drift_history(history)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["2024-01-07", "2024-01-14", "2024-01-21"]


# ---- a million rows: vectorized, and still SciPy's numbers ----

def test_a_million_rows_gives_scipys_numbers():
    rng = np.random.default_rng(7)
    n = 1_000_000
    ref = pd.DataFrame({"a": rng.normal(0, 1, n).astype(np.float32), "b": rng.poisson(3, n).astype(float),
                        "c": pd.Categorical(rng.choice(list("pqrs"), n))})
    cur = pd.DataFrame({"a": rng.normal(0.002, 1, n).astype(np.float32), "b": rng.poisson(3.01, n).astype(float),
                        "c": pd.Categorical(rng.choice(list("pqrs"), n, p=[0.26, 0.25, 0.25, 0.24]))})
    t = drift_table(ref, cur)
    for col in ("a", "b"):
        expected = stats.ks_2samp(ref[col], cur[col])
        assert t.loc[col, "statistic"] == expected.statistic and t.loc[col, "p_value"] == expected.pvalue
        # PSI the straightforward way: reference deciles, right-closed bins by pd.cut, shares floored at 1e-4
        cuts = np.unique(np.quantile(ref[col], np.arange(1, 10) / 10, method="inverted_cdf"))
        edges = np.r_[-np.inf, cuts, np.inf]
        p = pd.cut(ref[col], edges).value_counts(sort=False, normalize=True).to_numpy().clip(1e-4)
        q = pd.cut(cur[col], edges).value_counts(sort=False, normalize=True).to_numpy().clip(1e-4)
        assert np.isclose(t.loc[col, "psi"], np.sum((q - p) * np.log(q / p)), rtol=1e-9)
    counts = pd.concat([ref["c"].value_counts(), cur["c"].value_counts()], axis=1).to_numpy().T
    stat, p, _, _ = stats.chi2_contingency(counts, correction=False)
    assert np.isclose(t.loc["c", "statistic"], stat, rtol=1e-10) and np.isclose(t.loc["c", "p_value"], p, rtol=1e-8)
    # at a million rows a 1-point move of shares is certainly real (tiny p-value) but too small to matter (tiny PSI): not drift
    assert t.loc["c", "p_value"] < 1e-10 and t.loc["c", "psi"] < 0.01 and not t.loc["c", "drifted"]
    assert t["n_ref"].eq(n).all() and THRESHOLDS["psi"] > t["psi"].max()


# ---- the retrain trigger refuses what cannot work, before running anything ----

def test_retrain_trigger_needs_fresh_data_and_a_monitoring_result(tmp_path):
    from mlops_course.config import load_settings
    from mlops_course.monitor import retrain_on_drift
    settings = load_settings(env={"MLOPS_COURSE_WORK_DIR": str(tmp_path/"work")})
    raises(lambda: retrain_on_drift([], settings=settings), "same data makes the same model", "ingest.source=")
    raises(lambda: retrain_on_drift(["ingest.drift=0.5"], settings=settings), "monitor.json does not exist yet", "mlops-course run")
    raises(lambda: retrain_on_drift(["ingest.drift=0.5"], settings=settings, monitor_step="gate"), "no step 'gate' with a monitor_path")
    decision = tmp_path/"work/pipelines/course/data/monitor.json"
    decision.parent.mkdir(parents=True)
    decision.write_text('{"retrain": false, "reasons": []}')
    assert retrain_on_drift(["ingest.drift=0.5"], settings=settings) is None  # nothing drifted: nothing runs
    assert not (tmp_path/"work/pipelines/course/runs").exists()
