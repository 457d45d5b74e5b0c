"Data contracts: each corruption caught by its check on its column, bad files explained, the report written atomically, and the pipeline's validate step stopping a broken batch on its own."
import json

import numpy as np
import pandas as pd
import pytest

from mlops_course.core import WorkbenchError
from mlops_course.data import make_churn, plain_columns, write_table
from mlops_course.notebooks import execute_notebook
from mlops_course.validation import TABLE, DataContractError, QualityReport, churn_contract, read_batch, validate
from conftest import ROOT

CONTRACT = churn_contract()


@pytest.fixture(scope="module")
def batch():
    "A clean batch: no missing values, no duplicates (so each corruption below is the only thing wrong)."
    return make_churn(2_000, seed=5, missing_rate=0.0, duplicate_rate=0.0)


def _set(col, rows, value):
    def corrupt(df):
        if isinstance(df[col].dtype, pd.CategoricalDtype) and value not in df[col].cat.categories and value is not None:
            df[col] = df[col].cat.add_categories([value])
        df.loc[rows, col] = value
        return df
    return corrupt


def _share_ids(df):
    df.loc[7, "customer_id"] = df.loc[3, "customer_id"]  # a different customer under the same id
    return df


def _duplicate(df):
    return pd.concat([df, df.iloc[:150]], ignore_index=True)  # 150 exact copies in 2,150 rows: 7% > 5%


CORRUPTIONS = {  # name -> (corrupt, the one check that must fail, its column, failed rows)
    "age out of range": (_set("age", slice(0, 4), 250.0), "in_range(18, 90)", "age", 5),
    "negative charges": (_set("monthly_charges", [10, 20], -5.0), "greater_than_or_equal_to(0)", "monthly_charges", 2),
    "unknown category": (_set("contract", slice(0, 2), "lifetime"), "isin(['month-to-month', 'one-year', 'two-year'])", "contract", 3),
    "label not 0/1": (_set("target", [5], 2), "isin([0, 1])", "target", 1),
    "too many missing": (_set("tenure_months", slice(0, 199), np.nan), "null rate ≤ 5%", "tenure_months", 200),
    "missing key": (lambda df: df.astype({"customer_id": "float64"}).pipe(_set("customer_id", [9], np.nan)), "no missing values", "customer_id", 1),
    "key shared": (_share_ids, "unique customer_id", "customer_id", 2),
    "duplicate rows": (_duplicate, "duplicate rows ≤ 5%", TABLE, 150),
    "too few rows": (lambda df: df.iloc[:999], "at least 1,000 rows", TABLE, 999),
    "type changed": (lambda df: df.assign(age=df["age"].astype(str)), "type number", "age", 2_000),
    "column renamed": (lambda df: df.rename(columns={"region": "area"}), "column present", "region", 2_000),
}


def test_a_clean_batch_keeps_the_contract_as_parquet_and_as_csv(batch, tmp_path):
    for name in ("clean.parquet", "clean.csv"):
        df = read_batch(write_table(make_churn(3_000, seed=6), tmp_path/name))  # with the generator's usual 2% missing, 1% duplicates
        report = validate(df, CONTRACT, source=name)
        assert report.ok and report.n_failed == 0 and report.rows == 3_000, report.message()
        assert set(report.checks["status"]) == {"passed"} and "kept" in report.summary()
    assert validate(batch, CONTRACT, raise_on_failure=True).ok


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_fails_its_check_on_its_column(batch, name):
    corrupt, check, column, rows = CORRUPTIONS[name]
    df = corrupt(batch.copy())
    report = validate(df, CONTRACT)
    failed = report.failures
    assert failed[["check", "column"]].values.tolist() == [[check, column]], report.message()
    assert failed.loc[0, "failed_rows"] == rows
    with pytest.raises(DataContractError) as e:
        validate(df, CONTRACT, raise_on_failure=True)
    assert isinstance(e.value, WorkbenchError) and e.value.report.n_failed == 1
    assert check in str(e.value) and (column == TABLE or f"on {column}" in str(e.value))


def test_failures_show_example_values_and_rows(batch):
    df = _set("contract", [11, 12], "lifetime")(_set("age", [4], 250.0)(batch.copy()))
    failed = validate(df, CONTRACT).failures.set_index("column")
    assert failed.loc["age", "examples"] == "250" and failed.loc["age", "example_rows"] == "4"
    assert failed.loc["contract", "examples"] == "'lifetime'" and failed.loc["contract", "example_rows"] == "11, 12"


def test_a_latin1_csv_is_a_clear_error_naming_the_file_and_the_fix(batch, tmp_path):
    df = plain_columns(batch)
    df.loc[2, "region"] = "Ribeirão Preto"
    df.to_csv(tmp_path/"latin1.csv", index=False, encoding="latin-1")
    with pytest.raises(WorkbenchError) as e:
        read_batch(tmp_path/"latin1.csv")
    msg = str(e.value)
    assert "latin1.csv" in msg and "not utf-8" in msg and "line 4" in msg and "encoding='latin-1'" in msg
    assert read_batch(tmp_path/"latin1.csv", encoding="latin-1").loc[2, "region"] == "Ribeirão Preto"


def test_a_semicolon_csv_read_with_commas_says_it_looks_semicolon_delimited(batch, tmp_path):
    plain_columns(batch).to_csv(tmp_path/"semi.csv", index=False, sep=";")
    with pytest.raises(WorkbenchError) as e:
        read_batch(tmp_path/"semi.csv")
    assert "semi.csv" in str(e.value) and "looks ';'-delimited" in str(e.value) and "sep=';'" in str(e.value)
    assert validate(read_batch(tmp_path/"semi.csv", sep=";"), CONTRACT).ok


def test_a_parquet_file_whose_schema_changed_is_reported_by_column(batch, tmp_path):
    changed = batch.assign(tenure_months=batch["tenure_months"].map("{:.2f}".format)).rename(columns={"payment_method": "payment"})
    changed.to_parquet(tmp_path/"changed.parquet", index=False)
    report = validate(read_batch(tmp_path/"changed.parquet"), CONTRACT, source=tmp_path/"changed.parquet")
    failed = report.failures.set_index(["check", "column"])["detail"].to_dict()
    assert failed == {("type number", "tenure_months"): "expected number, found str",
                      ("column present", "payment_method"): "column not found; columns not in the contract: payment"}
    skipped = report.checks[report.checks["status"] == "skipped"]
    assert set(skipped["column"]) == {"tenure_months", "payment_method"} and len(skipped) == 5  # their other checks did not run
    assert "changed.parquet" in report.summary()


def test_an_empty_batch_is_one_clear_failure_and_an_empty_file_an_error(batch, tmp_path):
    (tmp_path/"header_only.csv").write_text(",".join(batch.columns) + "\n")
    (tmp_path/"empty.parquet").write_bytes(b"")
    batch.iloc[:0].to_parquet(tmp_path/"no_rows.parquet", index=False)
    for name in ("header_only.csv", "no_rows.parquet"):
        report = validate(read_batch(tmp_path/name), CONTRACT)
        assert report.rows == 0 and report.failures[["check", "detail"]].values.tolist() == [["at least 1,000 rows", "0 rows, at least 1,000 needed"]], name
    (tmp_path/"nothing.csv").write_bytes(b"")
    with pytest.raises(WorkbenchError, match="nothing.csv' is empty"):
        read_batch(tmp_path/"nothing.csv")
    with pytest.raises(WorkbenchError, match="empty.parquet' is not a readable Parquet file"):
        read_batch(tmp_path/"empty.parquet")


def test_the_report_page_is_written_atomically(batch, tmp_path):
    bad = validate(_set("age", [0], 250.0)(batch.copy()), CONTRACT)
    page = bad.write_html(tmp_path/"report.html")
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>") and "in_range(18, 90)" in text
    assert "<script" not in text and "http" not in text  # self-contained
    # a report that cannot be encoded fails while writing: the earlier page stays whole, no partial file is left
    broken = QualityReport(bad.contract, bad.rows, bad.checks, bad.null_rates, bad.seconds, source="batch \udc80")
    with pytest.raises(UnicodeEncodeError):
        broken.write_html(tmp_path/"report.html")
    with pytest.raises(UnicodeEncodeError):
        broken.write_html(tmp_path/"new.html")
    assert page.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_the_validate_step_alone_stops_a_corrupted_file_and_logs_its_report(batch, tmp_path, monkeypatch):
    "A student runs the pipeline's validate step on a broken file: it fails, the report is logged, no valid file is written."
    work = tmp_path/"work"
    monkeypatch.setenv("MLOPS_COURSE_WORK_DIR", str(work))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    step = ROOT/"nbs"/"pipeline"/"validate.ipynb"
    bad = _set("contract", slice(0, 9), "lifetime")(batch.copy())
    write_table(bad, tmp_path/"raw.parquet")
    params = {"raw_path": str(tmp_path/"raw.parquet"), "valid_path": str(tmp_path/"valid.parquet")}
    run = execute_notebook(step, tmp_path/"out"/"bad.ipynb", params, cwd=step.parent)
    assert run.status == "failed" and run.error.startswith("DataContractError: data contract 'churn' broken")
    assert "isin(['month-to-month', 'one-year', 'two-year']) on contract (10 rows, e.g. 'lifetime')" in run.error
    assert not (tmp_path/"valid.parquet").exists()
    report = work/"standalone"/"artifacts"/"contract_report.html"
    assert report.is_file() and "&#x27;lifetime&#x27;" in report.read_text(encoding="utf-8")
    outputs = [o for c in json.loads(run.output.read_text())["cells"] for o in c.get("outputs", [])]
    assert any("checks_failed=1" in "".join(o.get("text", "")) for o in outputs)  # run alone, metrics are printed
    # the same step on a good file passes it on unchanged
    write_table(batch, tmp_path/"raw.parquet")
    run = execute_notebook(step, tmp_path/"out"/"good.ipynb", params, cwd=step.parent)
    assert run.status == "ok", run.error
    assert pd.read_parquet(tmp_path/"valid.parquet").equals(batch)
    assert not list(step.parent.glob("*.parquet")) and not (step.parent/"mlruns").exists()
