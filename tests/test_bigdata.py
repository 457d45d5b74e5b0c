"Big data vs small data: three engines agree (also on dirty data), the out-of-core case under a real memory limit, and bad input."
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_course.bigdata import (ENGINES, OFFICES, QUERIES, RunningAggregate, check_churn_file, churn_file, compare_formats,
                                  measure, plot_scaling, run_workload, same_result, scaling_table, velocity_table,
                                  write_plain_parquet)
from conftest import raises
from mlops_course.data import make_churn, plain_columns, write_churn


def answers(path):
    return {(e, q): run_workload(e, path, q) for e in ENGINES for q in QUERIES}


def assert_all_agree(got):
    for (e, q), answer in got.items():
        pd.testing.assert_frame_equal(answer, got["pandas", q], check_exact=False, rtol=1e-6, atol=0, obj=f"{e}/{q}")


# ---- the three engines give the same answer ----

def test_engines_agree_on_a_small_file_and_with_a_hand_count(tmp_path):
    path = write_churn(tmp_path/"c.parquet", 30_000, progress=False)
    got = answers(path)
    assert_all_agree(got)
    df = pd.read_parquet(path)
    agg, join = got["duckdb", "aggregate"], got["dask", "join"]
    # counted by hand, without groupby
    month = df[(df["contract"] == "month-to-month") & (df["region"] == "north")]
    row = agg[(agg["contract"] == "month-to-month") & (agg["region"] == "north")].iloc[0]
    assert row["customers"] == len(month) and np.isclose(row["churn_rate"], month["target"].mean())
    assert np.isclose(row["mean_monthly_charges"], np.nanmean(month["monthly_charges"].to_numpy(dtype=float)))
    assert agg["customers"].sum() == len(df) == join["customers"].sum()
    office = df["region"].astype(str).map({r: o for r, (o, _) in OFFICES.items()})
    tax = df["region"].astype(str).map({r: t for r, (_, t) in OFFICES.items()})
    recife = office == "Recife"
    got_recife = join.set_index("office").loc["Recife"]
    assert got_recife["churned"] == df.loc[recife, "target"].sum()
    assert np.isclose(got_recife["monthly_revenue"], np.nansum((df["monthly_charges"].astype(float) * (1 + tax))[recife]))
    # same_result notices a changed count
    assert not same_result(join, join.assign(customers=join["customers"] + 1))


def test_engines_agree_on_missing_values_and_plain_text_columns(tmp_path):
    df = make_churn(20_000, seed=3, missing_rate=0.3)
    df["target"] = df["target"].astype(float)
    df.loc[df.index % 7 == 0, "target"] = np.nan                         # unknown labels
    df["region"] = df["region"].cat.add_categories(["islands"])
    df.loc[df.index % 11 == 0, "region"] = np.nan                        # customers without a region: no office
    df.loc[df.index[:40], "region"] = "islands"                          # a region the office table does not know
    df.loc[df.index[:40], "monthly_charges"] = np.nan                     # ... whose charges are all missing
    for name, frame in {"dirty.parquet": df, "plain.parquet": plain_columns(df)}.items():
        path = tmp_path/name
        frame.to_parquet(path, index=False)
        got = answers(path)
        assert_all_agree(got)
        agg, join = got["pandas", "aggregate"], got["duckdb", "join"]
        assert agg["contract"].isna().any() and agg["region"].isna().any()  # missing keys are groups, as in SQL
        islands = agg[agg["region"] == "islands"]
        assert islands["customers"].sum() == 40 and islands["mean_monthly_charges"].isna().all()
        known = df["region"].isin(list(OFFICES))
        assert join["customers"].sum() == known.sum()                     # unknown and missing regions are not joined
        assert join["churned"].sum() == df.loc[known, "target"].sum()


# ---- out of core: a real resident-memory limit ----

def test_out_of_core_pandas_runs_out_of_memory_and_duckdb_and_dask_do_not(tmp_path):
    limit = 320  # MB; DuckDB and Dask need ~165-175 MB before reading a row and peaked at 176-205 MB on this file; pandas needs ~440 MB
    path = write_churn(tmp_path/"big.parquet", 4_000_000, progress=False)
    reference = {q: run_workload("pandas", path, q) for q in QUERIES}     # without a limit, in this process
    starved = measure("pandas", path, memory_limit_mb=limit)
    assert starved["status"] == "out of memory" and starved["results"] is None
    assert "limit of 320 MB" in starved["error"] and "pandas" in starved["error"]
    for engine in ("duckdb", "dask"):
        r = measure(engine, path, memory_limit_mb=limit)
        assert r["status"] == "ok", r["error"]
        assert r["base_rss_mb"] <= r["peak_rss_mb"] <= limit and r["rows"] == 4_000_000
        for q in QUERIES: pd.testing.assert_frame_equal(r["results"][q], reference[q], check_exact=False, rtol=1e-6, obj=f"{engine}/{q}")


def test_measure_stops_a_slow_child_and_leaves_nothing_behind(tmp_path):
    path = write_churn(tmp_path/"c.parquet", 5_000, progress=False)
    before = set(Path(tempfile.gettempdir()).glob("mlops-measure-*"))
    r = measure("dask", path, timeout=0.3)
    assert r["status"] == "timeout" and "0.3 s" in r["error"] and r["results"] is None
    after = set(Path(tempfile.gettempdir()).glob("mlops-measure-*"))
    assert after <= before
    ok = measure("pandas", path)
    assert ok["status"] == "ok" and ok["error"] is None and same_result(ok["results"]["join"], run_workload("pandas", path, "join"))


# ---- bad input: clear errors naming the file, column or engine ----

def test_missing_file_changed_schema_and_unknown_engine(tmp_path):
    good = write_churn(tmp_path/"good.parquet", 1_000, progress=False)
    df = pd.read_parquet(good)
    missing = tmp_path/"nope.parquet"
    for call in (lambda: run_workload("duckdb", missing), lambda: measure("pandas", missing), lambda: check_churn_file(missing)):
        raises(call, "nope.parquet", "does not exist")
    df.drop(columns="target").to_parquet(tmp_path/"no_target.parquet")
    raises(lambda: run_workload("dask", tmp_path/"no_target.parquet"), "no_target.parquet", "'target' not found", "contract, region")
    df.assign(monthly_charges=df["monthly_charges"].astype(str)).to_parquet(tmp_path/"text_charges.parquet")
    raises(lambda: measure("duckdb", tmp_path/"text_charges.parquet"), "text_charges.parquet", "column 'monthly_charges'", "a number")
    df.assign(region=df["region"].cat.codes).to_parquet(tmp_path/"coded_region.parquet")
    raises(lambda: run_workload("pandas", tmp_path/"coded_region.parquet", "join"), "column 'region' is int8", "text")
    (tmp_path/"data.parquet").write_text("customer_id,contract\n1,one-year\n")
    raises(lambda: run_workload("pandas", tmp_path/"data.parquet"), "data.parquet", "not a readable Parquet file")
    raises(lambda: run_workload("pandas", tmp_path), "is a folder")
    for call in (lambda: run_workload("spark", good), lambda: measure("polars", good), lambda: scaling_table([10], ["pandas", "spark"])):
        raises(call, "unknown engine", "pandas, duckdb, dask")
    raises(lambda: run_workload("pandas", good, "median"), "unknown query 'median'", "aggregate, join")
    raises(lambda: measure("pandas", good, memory_limit_mb=-5), "memory_limit_mb = -5")
    raises(lambda: scaling_table([0, 10]), "sizes")
    raises(lambda: write_plain_parquet(tmp_path/"x.csv", 10), "x.csv", ".parquet")
    assert not (tmp_path/"x.csv").exists()


# ---- the measuring and the chapter's other tools ----

def test_scaling_table_reuses_its_files_and_plots(tmp_path):
    table = scaling_table([3_000, 12_000], ["pandas", "duckdb"], folder=tmp_path)
    assert list(table["engine"]) == ["pandas", "duckdb"] * 2 and list(table["rows"]) == [3_000, 3_000, 12_000, 12_000]
    assert (table["status"] == "ok").all() and table["same_answer"].all()
    assert (table.loc[table["engine"] == "pandas", "time_vs_pandas"] == 1).all() and table["memory_vs_pandas"].gt(0).all()
    files = sorted(tmp_path.glob("churn_*.parquet"))
    assert [check_churn_file(f) for f in files] == [12_000, 3_000]
    stamps = {f: f.stat().st_mtime_ns for f in files}
    (tmp_path/"churn_500_seed42.parquet").write_text("a damaged leftover")
    assert check_churn_file(churn_file(tmp_path, 500)) == 500                      # rewritten
    assert churn_file(tmp_path, 3_000).stat().st_mtime_ns == stamps[tmp_path/"churn_3000_seed42.parquet"]  # reused
    oom = table.iloc[[0]].assign(rows=50_000, status="out of memory", seconds=np.nan, memory_limit_mb=200.0)
    fig = plot_scaling(pd.concat([table, oom], ignore_index=True))
    time_ax, mem_ax = fig.axes
    assert time_ax.get_xscale() == mem_ax.get_yscale() == "log" and len(time_ax.get_lines()) == 2
    assert any("out of memory" in t.get_text() for t in mem_ax.get_legend().get_texts())
    raises(lambda: plot_scaling(table.drop(columns="peak_rss_mb")), "'peak_rss_mb'")


def test_plain_parquet_holds_the_same_rows_bigger(tmp_path):
    compact = write_churn(tmp_path/"c.parquet", 70_000, seed=5, progress=False)
    plain = write_plain_parquet(tmp_path/"p.parquet", 70_000, seed=5)
    a, b = pd.read_parquet(compact), pd.read_parquet(plain)
    pd.testing.assert_frame_equal(plain_columns(a).astype({c: str for c in ("contract", "region")}),
                                  b.astype({c: str for c in ("contract", "region")}), check_dtype=False)
    assert plain.stat().st_size > 2 * compact.stat().st_size
    assert all(same_result(run_workload("duckdb", plain, q), run_workload("pandas", compact, q)) for q in QUERIES)


def test_running_aggregate_equals_the_batch_answer_and_formats_keep_types(tmp_path):
    df = make_churn(6_000, seed=9, missing_rate=0.2)
    running = RunningAggregate()
    for i in range(0, len(df), 700): running.update(df.iloc[i:i + 700])
    whole = tmp_path/"s.parquet"
    df.to_parquet(whole, index=False)
    assert running.rows_ == len(df) and same_result(running.result(), run_workload("duckdb", whole), rtol=1e-9)
    raises(lambda: running.update(df.drop(columns="contract")), "'contract'", "the batch")
    v = velocity_table(df, (50, 3_000))
    assert list(v["batches"]) == [120, 2] and v["same_answer"].all() and (v["rows_per_s"] > 0).all()
    raises(lambda: velocity_table(df, [0]), "batch_sizes")
    f = compare_formats(df.head(2_000), tmp_path/"formats")
    assert f.loc["parquet", "dtypes_kept"] == df.shape[1] > f.loc["csv", "dtypes_kept"]
    assert (tmp_path/"formats"/"data.jsonl").exists() and f.loc["json lines", "file_mb"] > f.loc["parquet", "file_mb"]
