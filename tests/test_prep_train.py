"What the chapter 02 notebooks cannot test: scikit-learn's own estimator checks, import cost, and a saved model in other processes."
import subprocess
import sys
import time

import numpy as np
import pytest

from mlops_course.core import WorkbenchError


def run_python(code, cwd, timeout=300):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_outlier_clipper_passes_scikit_learns_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator
    from mlops_course.prep import OutlierClipper
    results = check_estimator(OutlierClipper(), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert len(results) > 30 and not failed, failed


def test_importing_train_loads_no_heavy_library(tmp_path):
    r = run_python("import sys, mlops_course.train\n"
                   "print(sorted(m for m in ('sklearn', 'matplotlib', 'joblib', 'scipy') if m in sys.modules))", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def churn_model(tmp_path_factory):
    "A small fitted churn pipeline (with OutlierClipper and RatioFeatures inside), saved once."
    from mlops_course.data import make_churn
    from mlops_course.prep import build_preprocessor, clean, split
    from mlops_course.train import build_model, save_model
    df, _ = clean(make_churn(1_500, seed=3))
    X_train, X_test, y_train, _ = split(df, seed=3)
    pre = build_preprocessor(X_train, exclude=["customer_id"], ratios={"calls_per_month": ("support_calls", "tenure_months")})
    model = build_model(pre, "random_forest", params={"n_estimators": 20}).fit(X_train, y_train)
    path = save_model(model, tmp_path_factory.mktemp("models")/"churn.joblib", metadata={"who": "test"})
    return model, path, X_test


def test_a_saved_model_predicts_the_same_in_a_fresh_process(churn_model, tmp_path):
    model, path, X_test = churn_model
    X_test.to_parquet(tmp_path/"rows.parquet")
    r = run_python("import numpy as np, pandas as pd\n"
                   "from mlops_course.train import load_model, predict\n"
                   f"model = load_model({str(path)!r})\n"
                   "rows = pd.read_parquet('rows.parquet').assign(note='extra columns are ignored')\n"
                   "np.save('p.npy', predict(model, rows, proba=True).to_numpy())", tmp_path)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path/"p.npy"), model.predict_proba(X_test))


def test_a_failed_save_leaves_the_previous_model_intact(churn_model):
    from mlops_course.train import load_model, save_model
    model, path, _ = churn_model
    before = path.read_bytes()
    with pytest.raises(WorkbenchError, match="churn.joblib"):
        save_model(model, path, metadata={"callback": lambda: 0})  # fails half-way: a lambda cannot be pickled
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert load_model(path, with_info=True)[1]["metadata"] == {"who": "test"}


def test_a_reader_never_sees_a_half_written_model(churn_model, tmp_path):
    "One process keeps re-saving the model while another keeps loading it: every load succeeds."
    model, path, _ = churn_model
    target = tmp_path/"live.joblib"
    target.write_bytes(path.read_bytes())
    writer = subprocess.Popen([sys.executable, "-c",
                               "from mlops_course.train import load_model, save_model\n"
                               f"model = load_model({str(path)!r})\n"
                               f"for i in range(15): save_model(model, {str(target)!r}, metadata={{'version': i}})"],
                              cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    from mlops_course.train import load_model
    loads, versions = 0, set()
    try:
        while writer.poll() is None or loads == 0:
            versions.add(load_model(target, with_info=True)[1]["metadata"].get("version"))
            loads += 1
            time.sleep(0.01)
    finally:
        writer.wait(timeout=300)
    assert writer.returncode == 0, writer.stderr.read()
    assert len(versions) >= 2  # it did read while the writer was writing
    assert load_model(target, with_info=True)[1]["metadata"]["version"] == 14
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
