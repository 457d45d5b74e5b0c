"""Data labeling: the labeler saves every click at once and a new session resumes; the label file survives a cut write and
a killed process; weak supervision's vote and summary match hand-computed cases; uncertainty sampling picks the rows nearest
the decision boundary. The widget is driven through its buttons' `click()`, which runs the same handlers as a click in JupyterLab."""
import base64
import json
import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from mlops_course.core import WorkbenchError
from mlops_course.labeling import (ABSTAIN, LabelFileWarning, Labeler, LabelingError, LabelingFunction, LabelStore, apply_lfs,
                                   compare_strategies, labeling_function, labels_to_reach, learning_curve, lf_summary,
                                   majority_vote, select_uncertain, uncertainty)


def _rows(n=6):
    return pd.DataFrame({"customer_id": np.arange(101, 101 + n), "contract": ["month-to-month", "two-year"] * (n // 2),
                         "monthly_charges": np.linspace(20, 90, n), "age": np.arange(n) + 30.0})


def _on_disk(path):
    "Every record in the file, parsed straight from the bytes (no LabelStore involved)."
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]


# --- the labeler widget ---------------------------------------------------------------------------------------------

def test_each_click_is_on_disk_before_the_next(tmp_path):
    path = tmp_path / "labels.jsonl"
    df = _rows()
    lab = Labeler(df, path, classes={1: "churn", 0: "stay"}, labeller="tester")
    assert lab.current_key == 101 and list(lab.buttons) == [1, 0] and lab.buttons[1].description == "churn"
    for i, answer in enumerate([1, 0, 0]):
        key = lab.current_key
        lab.buttons[answer].click()
        on_disk = _on_disk(path)
        assert len(on_disk) == i + 1 and on_disk[-1]["key"] == key and on_disk[-1]["label"] == answer
        assert on_disk[-1]["labeller"] == "tester" and on_disk[-1]["time"]
        assert lab.current_key == df["customer_id"].iloc[i + 1] and f"saved customer_id = {key}" in lab.status.value
    assert lab.progress.value == 3 and "row 4 of 6" in lab.header.value and "two-year" in lab.row_view.value and "62.00" in lab.row_view.value
    # Skip moves on without writing; Back returns to the skipped row; relabelling appends, the last label wins
    lab.skip_button.click()
    assert lab.current_key == 105 and len(_on_disk(path)) == 3
    lab.back_button.click()
    assert lab.current_key == 104
    lab.back_button.click()
    assert lab.current_key == 103 and "labelled <b>stay</b>" in lab.header.value
    lab.buttons[1].click()  # relabel 103, then on to the next row without a label
    assert [r["key"] for r in _on_disk(path)] == [101, 102, 103, 103] and lab.current_key == 104
    store = LabelStore(path)
    assert store.labels().loc[103, "label"] == 1 and store.labels().loc[103, "times_labelled"] == 2
    assert store.history().query("key == 103")["label"].tolist() == [0, 1]


def test_a_new_labeler_resumes_at_the_first_unlabelled_row_and_loses_nothing(tmp_path):
    path = tmp_path / "labels.jsonl"
    df = _rows()
    first = Labeler(df, path, classes=[0, 1])
    first.buttons[1].click(); first.buttons[0].click()
    first.skip_button.click()                       # 103 skipped: still unlabelled
    first.buttons[1].click()                        # 104
    del first                                       # the notebook is closed
    again = Labeler(df, LabelStore(path), classes=[0, 1])
    assert again.current_key == 103 and again.current == {101: 1, 102: 0, 104: 1} and again.progress.value == 3
    for _ in range(3): again.buttons[0].click()     # 103, then 105 and 106
    assert again.done and again.current_key is None and all(b.disabled for b in again.buttons.values())
    assert "All 6 rows are labelled" in again.header.value
    assert LabelStore(path).labels()["label"].to_dict() == {101: 1, 102: 0, 104: 1, 103: 0, 105: 0, 106: 0}
    with pytest.raises(WorkbenchError, match="every row is labelled"): again.label(1)
    # a third session on a file labelled for other rows as well only counts its own rows
    other = Labeler(_rows(8), path, classes=[0, 1])
    assert other.current_key == 107 and len(other.current) == 6


def test_bad_class_or_unknown_row_is_refused_and_the_store_is_unchanged(tmp_path):
    path = tmp_path / "labels.jsonl"
    lab = Labeler(_rows(), path, classes=[0, 1])
    lab.buttons[1].click()
    before = path.read_bytes()
    for bad, match in [(lambda: lab.label(2), "2 is not a class"), (lambda: lab.label("1"), "'1' is not a class"),
                       (lambda: lab.label(True), "not bool"), (lambda: lab.label(0, key=999), "no row has customer_id = 999"),
                       (lambda: lab.label(0, key=101.0), "not float")]:
        with pytest.raises(WorkbenchError, match=match): bad()
        assert path.read_bytes() == before and lab.current_key == 102
    for bad, match in [(lambda: LabelStore(path).add(1.5, 0), "row key must be"), (lambda: LabelStore(path).add(5, None), "label must be"),
                       (lambda: LabelStore(path, classes=[0, 1]).add(5, 3), "3 is not a class")]:
        with pytest.raises(WorkbenchError, match=match): bad()
        assert path.read_bytes() == before
    # a click the store refuses is shown in red, and the row stays
    strict = Labeler(_rows(), LabelStore(path, classes=[0]), classes=[0, 1])
    assert strict.current_key == 102
    strict.buttons[1].click()
    assert "not saved" in strict.status.value and "1 is not a class" in strict.status.value
    assert strict.current_key == 102 and path.read_bytes() == before
    # bad set-ups say what is wrong
    with pytest.raises(WorkbenchError, match="repeats"): Labeler(pd.concat([_rows(), _rows()]), path, classes=[0, 1])
    with pytest.raises(WorkbenchError, match="'id' is not in the data"): Labeler(_rows(), path, classes=[0, 1], key="id")
    with pytest.raises(WorkbenchError, match="'nope'"): Labeler(_rows(), path, classes=[0, 1], columns=["nope"])
    with pytest.raises(WorkbenchError, match="ABSTAIN"): Labeler(_rows(), path, classes=[0, -1])
    with pytest.raises(WorkbenchError, match="is a folder"): LabelStore(tmp_path)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(WorkbenchError, match="label 1 for row 7 was NOT saved"): LabelStore(tmp_path / "a_file" / "labels.jsonl").add(7, 1)
    assert path.read_bytes() == before


# --- the label file under accidents --------------------------------------------------------------------------------

def test_a_cut_last_line_is_reported_kept_aside_and_repaired(tmp_path):
    path = tmp_path / "labels.jsonl"
    store = LabelStore(path)
    for k, v in [(1, "a"), (2, "b"), (3, "a")]: store.add(k, v)
    cut = b'{"key": 4, "label": "b", "labeller": "x", "ti'
    with open(path, "ab") as f: f.write(cut)
    with pytest.warns(LabelFileWarning, match=r"labels\.jsonl, line 4: the last line is cut half-way"):
        labels = store.labels()
    assert labels["label"].to_dict() == {1: "a", 2: "b", 3: "a"}
    assert path.read_bytes().endswith(cut)          # reading changes nothing
    with pytest.warns(LabelFileWarning, match=r"line 4: an incomplete label .* moved to .*labels\.jsonl\.broken"):
        store.add(5, "b")
    assert [r["key"] for r in _on_disk(path)] == [1, 2, 3, 5]
    aside = json.loads(store.broken_path.read_text())
    assert base64.b64decode(aside["bytes_base64"]) == cut and aside["line"] == 4 and aside["file"] == "labels.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.labels()["label"].to_dict() == {1: "a", 2: "b", 3: "a", 5: "b"}


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "labels.jsonl"
    LabelStore(path).add(1, 0)
    with open(path, "ab") as f: f.write(b'{"key": 2, "label": 1, "labeller": "x", "time": "2024-01-01T00:00:00+00:00"}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # a whole record is not damage: nothing to report
        assert LabelStore(path).labels()["label"].to_dict() == {1: 0, 2: 1}
        LabelStore(path).add(3, 0)
    assert [r["key"] for r in _on_disk(path)] == [1, 2, 3]
    assert not LabelStore(path).broken_path.exists()


def test_a_damaged_middle_line_is_reported_and_left_alone(tmp_path):
    path = tmp_path / "labels.jsonl"
    store = LabelStore(path)
    store.add(1, 0)
    with open(path, "ab") as f: f.write(b"\x00\x00garbage\n")
    store.add(2, 1)
    with pytest.warns(LabelFileWarning, match=r"line 2 is not a label record"):
        assert store.labels()["label"].to_dict() == {1: 0, 2: 1}
    assert b"garbage" in path.read_bytes()         # never rewritten


KILLED = """
import sys
from mlops_course.labeling import LabelStore
store = LabelStore(sys.argv[1])
i = 0
while True:
    store.add(i, i % 3, labeller="loop")
    print(i, flush=True)                    # printed only once add() has returned: a completed label
    i += 1
"""


def test_a_killed_labelling_process_leaves_every_completed_label(tmp_path):
    path = tmp_path / "labels.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(path)], stdout=subprocess.PIPE, text=True)
    completed = []
    try:
        for line in proc.stdout:
            completed.append(int(line))
            if len(completed) >= 300: break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        labels = LabelStore(path).labels()
    assert set(completed) <= set(labels.index)
    assert all(labels.loc[i, "label"] == i % 3 for i in completed)
    LabelStore(path).add("after", 1)               # and the file takes new labels
    assert LabelStore(path).labels().loc["after", "label"] == 1


WRITER = """
import sys
from mlops_course.labeling import LabelStore
store = LabelStore(sys.argv[1])
for i in range(150): store.add(f"{sys.argv[2]}-{i}", i % 2, labeller=sys.argv[2])
"""


def test_two_sessions_on_one_file_never_interleave_lines(tmp_path):
    path = tmp_path / "labels.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), who]) for who in ("ana", "bruno")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    records = _on_disk(path)                         # every line parses: no interleaved writes
    assert len(records) == 300 and {r["labeller"] for r in records} == {"ana", "bruno"}
    assert len(LabelStore(path).labels()) == 300


# --- weak supervision ----------------------------------------------------------------------------------------------

def test_lf_summary_and_majority_vote_against_hand_computed_cases():
    # rows:    0          1          2          3         4
    # f:      spam       spam        -         ham        -
    # g:      spam       ham         -          -         -
    # h:      ham         -          -         ham       spam
    L = pd.DataFrame({"f": ["spam", "spam", -1, "ham", -1], "g": ["spam", "ham", -1, -1, -1], "h": ["ham", -1, -1, "ham", "spam"]})
    classes = ["ham", "spam"]
    s = lf_summary(L, y=["spam", "ham", "ham", "ham", "ham"], classes=classes)
    assert s["coverage"].tolist() == [3 / 5, 2 / 5, 3 / 5]
    assert s["overlaps"].tolist() == [3 / 5, 2 / 5, 2 / 5]          # f: rows 0,1,3; g: 0,1; h: 0,3
    assert s["conflicts"].tolist() == [2 / 5, 2 / 5, 1 / 5]         # f: rows 0 (h), 1 (g); g: 0 (h), 1 (f); h: row 0
    assert s["correct"].tolist() == [2, 2, 1] and s["incorrect"].tolist() == [1, 0, 2]
    assert s["accuracy"].tolist() == [2 / 3, 1.0, 1 / 3]
    assert s["polarity"].tolist() == [["ham", "spam"], ["ham", "spam"], ["ham", "spam"]]
    assert majority_vote(L, classes=classes).tolist() == ["spam", ABSTAIN, ABSTAIN, "ham", "spam"]   # row 1 ties
    assert majority_vote(L, classes=classes, min_votes=2).tolist() == ["spam", ABSTAIN, ABSTAIN, "ham", ABSTAIN]
    assert majority_vote(L, classes=classes, weights={"f": 1, "g": 1, "h": 2.5}).tolist() == ["ham", ABSTAIN, ABSTAIN, "ham", "spam"]
    assert majority_vote(L, classes=classes, weights=[2, 1, 1]).tolist()[1] == "spam"
    with pytest.raises(WorkbenchError, match="missing"): majority_vote(L, classes=classes, weights={"f": 1})
    with pytest.raises(WorkbenchError, match="weights must be 3"): majority_vote(L, classes=classes, weights=[1, -1, 1])
    with pytest.raises(WorkbenchError, match="'maybe'"): lf_summary(L.replace({"ham": "maybe"}), classes=classes)
    with pytest.raises(WorkbenchError, match="not a class"): lf_summary(L, y=["spam", "x", "ham", "ham", "ham"], classes=classes)
    with pytest.raises(WorkbenchError, match="index differs"): lf_summary(L, y=pd.Series(["ham"] * 5, index=range(1, 6)), classes=classes)


def test_apply_lfs_row_wise_and_vectorized_agree_and_failures_name_the_function_and_row():
    df = _rows(6)

    @labeling_function()
    def expensive(row):
        return 1 if row.monthly_charges > 60 else ABSTAIN

    cheap = labeling_function(name="cheap", vectorized=True)(lambda d: np.where(d["monthly_charges"] < 40, 0, ABSTAIN))
    same = LabelingFunction(lambda d: np.where(d["monthly_charges"] > 60, 1, ABSTAIN), name="expensive_v", vectorized=True)
    L = apply_lfs(df, [expensive, cheap, same], key="customer_id")
    assert list(L.columns) == ["expensive", "cheap", "expensive_v"] and L.index.equals(df.index)
    assert L["expensive"].tolist() == L["expensive_v"].tolist() == [-1, -1, -1, 1, 1, 1]
    assert L["cheap"].tolist() == [0, 0, -1, -1, -1, -1] and str(L["cheap"].dtype) == "int64"

    @labeling_function()
    def divides(row):
        return 1 if 100 / (row.customer_id - 104) > 1 else ABSTAIN

    with pytest.raises(LabelingError, match=r"'divides' raised ZeroDivisionError.*row 3 \(customer_id = 104\)"):
        apply_lfs(df, [divides], key="customer_id")
    with pytest.raises(LabelingError, match=r"'forgetful' returned None on row 0 \(index 0\).*forget to `return ABSTAIN`"):
        apply_lfs(df, [LabelingFunction(lambda r: 1 if r.age > 33 else None, name="forgetful")])
    with pytest.raises(LabelingError, match=r"'three' returned 3 on row 2"):
        apply_lfs(df, [LabelingFunction(lambda d: np.array([0, 1, 3, 0, 1, 0]), name="three", vectorized=True)], key="customer_id")
    with pytest.raises(LabelingError, match=r"'booly' returned True"):
        apply_lfs(df, [LabelingFunction(lambda d: d["age"] > 0, name="booly", vectorized=True)])
    with pytest.raises(LabelingError, match=r"'short' \(vectorized\) returned shape \(2,\)"):
        apply_lfs(df, [LabelingFunction(lambda d: [0, 1], name="short", vectorized=True)])
    with pytest.raises(LabelingError, match=r"'typo' \(vectorized\) raised KeyError"):
        apply_lfs(df, [LabelingFunction(lambda d: d["agee"], name="typo", vectorized=True)])
    with pytest.raises(LabelingError, match=r"row has no column 'agee'"):
        apply_lfs(df, [LabelingFunction(lambda r: r.agee, name="typo")])
    with pytest.raises(WorkbenchError, match="share a name"): apply_lfs(df, [expensive, expensive])
    with pytest.raises(WorkbenchError, match="needs a name"): LabelingFunction(lambda r: 0)


# --- active learning -----------------------------------------------------------------------------------------------

def test_uncertainty_sampling_picks_the_rows_nearest_the_decision_boundary():
    from sklearn.linear_model import LogisticRegression
    X = np.array([[-4.0, 0], [-1, 0.5], [-0.3, 0], [0.1, -0.2], [0.4, 0.1], [2, 1], [3, 0], [5, -1]])
    y = (X[:, 0] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    picked = select_uncertain(model, X, 3)
    distance = np.abs(model.decision_function(X)) / np.linalg.norm(model.coef_)    # distance to the boundary
    assert picked.tolist() == np.argsort(distance)[:3].tolist()
    assert set(picked.tolist()) == {2, 3, 4}
    assert uncertainty(model.predict_proba(X))[picked].min() > uncertainty(model.predict_proba(X))[[0, 7]].max()
    assert np.allclose(uncertainty([[0.5, 0.5], [1.0, 0.0]]), [1.0, 0.0]) and np.allclose(uncertainty([[0.1, 0.3, 0.6]]), [0.7])
    with pytest.raises(WorkbenchError, match="shape"): uncertainty([0.2, 0.8])
    with pytest.raises(WorkbenchError, match="predict_proba"): select_uncertain(object(), X, 1)


def test_learning_curves_share_their_start_and_grow_by_batch():
    from sklearn.datasets import make_classification
    X, y = make_classification(400, n_features=6, random_state=0)
    curves = compare_strategies(X, y, seeds=(0, 1), initial=10, batch=5, rounds=4, scoring="accuracy")
    assert len(curves) == 2 * 2 * 5 and curves["n_labeled"].unique().tolist() == [10, 15, 20, 25, 30]
    start = curves.query("round == 0").groupby("seed")["score"].nunique()
    assert (start == 1).all()                                   # same held-out set and initial rows for both strategies
    again = learning_curve(X, y, "random", initial=10, batch=5, rounds=4, seed=1, scoring="accuracy")
    assert again["score"].tolist() == curves.query("strategy == 'random' and seed == 1")["score"].tolist()   # seeded
    mean = curves.groupby(["strategy", "n_labeled"])["score"].mean()
    goal = mean["random"].iloc[2]                                # random's mean score at 20 labels
    assert labels_to_reach(curves, goal)["random"] == mean["random"][mean["random"] >= goal].index.min() <= 20
    assert np.isnan(labels_to_reach(curves, 2.0)).all()
    with pytest.raises(WorkbenchError, match="pool holds only"): learning_curve(X, y, initial=10, batch=100, rounds=10)
    with pytest.raises(WorkbenchError, match="unknown strategy 'smart'"): learning_curve(X, y, strategy="smart")
    with pytest.raises(WorkbenchError, match="single class"): learning_curve(X, np.zeros(len(y)))
