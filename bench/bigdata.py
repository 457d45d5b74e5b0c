"""Big data vs small data benchmark, side by side in one run: the same aggregation and join with pandas, DuckDB and Dask.

Workload (`mlops_course.bigdata`): over a churn Parquet file written by `write_churn` (compact: snappy, dictionary-encoded
categories, a row group per 65,536 rows),
- aggregate: by contract and region, customers, churn rate and mean monthly charge;
- join: customers joined with the 4-row office table on region, then by office: customers, churned, revenue with tax.
Each engine runs in a fresh process (`measure`): warm-up on the file's first 2,000 rows, then both queries timed;
peak memory is the child's VmHWM (peak resident memory, Python and libraries included). The answers of every engine
are compared with the first engine's (`same_answer`) before any number is trusted.

Then out of core: the largest file under a resident-memory limit (default 256 MB, smaller than the file): pandas is
expected to run out of memory, DuckDB and Dask to finish with the same answers as pandas without the limit.

Usage:   .venv/bin/python bench/bigdata.py [--sizes 10000 100000 1000000 10000000] [--limit 256] [--folder DIR]

One run on the development machine (2 cores, 24 GB, other jobs running beside it; files written in 11.9 s, not timed),
seconds for both queries, peak resident memory of the whole process (MB), ratios against pandas at the same size:

    rows        engine  seconds  peak MB  time/pandas  memory/pandas  same answer
    10,000      pandas    0.025     124       1.00         1.00          yes
                duckdb    0.130     167       5.21         1.34          yes
                dask      0.261     174      10.47         1.40          yes
    100,000     pandas    0.050     131       1.00         1.00          yes
                duckdb    0.072     171       1.45         1.30          yes
                dask      0.182     183       3.65         1.39          yes
    1,000,000   pandas    0.246     201       1.00         1.00          yes
                duckdb    0.112     178       0.45         0.89          yes
                dask      0.425     216       1.72         1.08          yes
    10,000,000  pandas    2.132     854       1.00         1.00          yes
                duckdb    0.342     186       0.16         0.22          yes
                dask      4.508     235       2.11         0.27          yes

    out of core: 10,000,000 rows, file 295 MB, limit 256 MB
      pandas  out of memory (stopped at 259 MB)
      duckdb  ok, 0.43 s, peak 180 MB, same answer as pandas without a limit
      dask    ok, 5.20 s, peak 218 MB, same answer as pandas without a limit

Base memory (Python + pandas + the engine, after warm-up): pandas 121-123 MB, DuckDB 164-166 MB, Dask 173-174 MB.
Small files are all fixed costs (DuckDB's ~0.05 s of query setup was 0.13 s in this run: noise of a loaded machine).
"""
import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from mlops_course.bigdata import ENGINES, QUERIES, churn_file, measure, same_result, scaling_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 10_000_000])
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--limit", type=float, default=256, help="resident-memory limit (MB) of the out-of-core run")
    ap.add_argument("--folder", default=None, help="keep the Parquet files here (reused on the next run); default: a temporary folder")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-bigdata-") as tmp:
        folder = Path(args.folder or tmp)
        start = time.perf_counter()
        for n in args.sizes: churn_file(folder, n)  # written once, outside every timing
        print(f"files written in {time.perf_counter() - start:.1f} s to {folder}")

        table = scaling_table(args.sizes, args.engines, folder=folder)
        show = table[["rows", "engine", "status", "seconds", "aggregate_s", "join_s", "peak_rss_mb", "base_rss_mb",
                      "time_vs_pandas", "memory_vs_pandas", "same_answer"]]
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(show.round(3).to_string(index=False))
        if not (table["status"] == "ok").all() or not table["same_answer"].all():
            print("\nNOT ALL RUNS FINISHED WITH THE SAME ANSWER:")
            print(table.loc[(table["status"] != "ok") | (table["same_answer"] != True), ["rows", "engine", "status", "error"]].to_string())

        print("\nratios against pandas (time, peak memory) at each size:")
        for n, g in table.groupby("rows"):
            print(f"  {n:>12,}: " + "   ".join(f"{r.engine} {r.time_vs_pandas:.2f}x time, {r.memory_vs_pandas:.2f}x memory"
                                            for r in g.itertuples() if r.engine != "pandas"))

        big = churn_file(folder, max(args.sizes))
        size_mb = big.stat().st_size / 2**20
        print(f"\nout of core: {max(args.sizes):,} rows, file {size_mb:.0f} MB, limit {args.limit:g} MB"
              + ("" if size_mb > args.limit else "  (the file is NOT larger than the limit: pick bigger --sizes)"))
        reference = measure("pandas", big)["results"]  # pandas without a limit: the answer to compare with
        for engine in args.engines:
            r = measure(engine, big, memory_limit_mb=args.limit)
            same = r["results"] is not None and reference is not None and all(same_result(r["results"][q], reference[q]) for q in QUERIES)
            line = f"  {engine:7s} {r['status']:14s} peak {r['peak_rss_mb']:6.0f} MB"
            line += f"  {r['seconds']:6.2f} s  same answer as pandas without a limit: {same}" if r["status"] == "ok" else f"  {r['error']}"
            print(line)


if __name__ == "__main__":
    main()
