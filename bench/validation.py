"""Validation benchmark, side by side in one run: `mlops_course.validation.validate` against pandera's own
`schema.validate(df, lazy=True)` with the same schema (`churn_contract()`).

Data: `make_churn` batches of 1,000,000 rows (11 columns: an int64 key, 5 float32 features, 4 categoricals, an int8
label), in three variants:
- clean: the generator's defaults (2% missing per feature, 1% duplicate rows): every check passes;
- corrupted: 10% missing and 8% duplicate rows, plus 1,000 ages of 250, 1,000 unknown `contract` values and 100 keys
  given to a second, different row: 9 checks fail and pandera collects ~1.3 million failure cases;
- from CSV: the clean batch written to a CSV file and read back with `read_batch` (float64, int64 and str columns):
  the same checks on other dtypes.

Both sides run exactly the same pandera checks; ours also turns pandera's failure cases (one line per failing
value) into one line per check and computes each column's null rate. The wrapper's cost is the difference.
Before any time is reported, both sides must agree: pandera raises exactly when our report is not ok, and the number
of failing rows per (check, column) in our report equals the one counted from pandera's failure cases.

Target: ours / pandera <= 1.10 on every variant (the wrapper must add little).

Usage:   .venv/bin/python bench/validation.py [--rows 1000000] [--repeat 5]
"""
import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from mlops_course.data import make_churn, write_table
from mlops_course.validation import TABLE, churn_contract, read_batch, validate


def corrupted(n: int) -> pd.DataFrame:
    df = make_churn(n, seed=2, missing_rate=0.10, duplicate_rate=0.08)
    df.loc[: 999, "age"] = 250.0
    df["contract"] = df["contract"].cat.add_categories(["lifetime"])
    df.loc[1_000:1_999, "contract"] = "lifetime"
    df.loc[2_000:2_099, "customer_id"] = df.loc[3_000:3_099, "customer_id"].to_numpy()  # 100 keys shared by different rows
    return df


def pandera_side(df: pd.DataFrame, schema) -> pd.DataFrame | None:
    "pandera alone: validate lazily; its failure cases, or None when the batch passed."
    try: schema.validate(df, lazy=True); return None
    except pa.errors.SchemaErrors as e: return e.failure_cases


def agree(df: pd.DataFrame, schema) -> int:
    "Both sides reach the same verdict and count the same failing rows per check; return the number of failed checks."
    ours, fc = validate(df, schema), pandera_side(df, schema)
    assert ours.ok == (fc is None), "verdicts differ"
    if fc is None: return 0
    fc = fc[fc["check"] != "column_in_dataframe"]
    where = np.where(fc["schema_context"] == "DataFrameSchema", TABLE, fc["column"].astype(str))
    theirs = fc.groupby([fc["check"].to_numpy(), where])["index"].nunique()
    for r in ours.failures.itertuples():
        key = (r.check, TABLE if r.check.startswith("unique ") else r.column)
        assert theirs[key] == r.failed_rows, (key, theirs[key], r.failed_rows)
    assert len(theirs) == ours.n_failed
    return ours.n_failed


def best_of(fns: list, repeat: int) -> list[float]:
    "The best time of each function, run in turns (so that the machine's other load falls on both sides alike)."
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return [min(ts) for ts in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    schema = churn_contract()
    clean = make_churn(args.rows, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        from_csv = read_batch(write_table(clean, Path(tmp)/"clean.csv"))
    variants = {"clean": clean, "corrupted": corrupted(args.rows), "from CSV": from_csv}
    validate(clean.iloc[:1000], schema)  # warm up imports and pandera's backends
    print(f"{args.rows:,} rows, best of {args.repeat}; seconds per million rows\n")
    print(f"{'variant':<11} {'failed checks':>13} {'pandera':>9} {'ours':>9} {'ours/pandera':>13}")
    ratios = []
    for name, df in variants.items():
        failed = agree(df, schema)
        t_pandera, t_ours = best_of([lambda: pandera_side(df, schema), lambda: validate(df, schema)], args.repeat)
        per_m = 1e6 / args.rows
        ratios.append(t_ours / t_pandera)
        print(f"{name:<11} {failed:>13} {t_pandera * per_m:>9.3f} {t_ours * per_m:>9.3f} {t_ours / t_pandera:>12.2f}x")
    print(f"\nworst ratio {max(ratios):.2f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
