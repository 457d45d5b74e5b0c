"""Data versioning benchmark, side by side in one run: what it costs to fingerprint data against reading it.

Files: the synthetic churn data written as Parquet and as CSV (default 2,000,000 rows). For each file:
- `file_sha256` (ours: SHA-256 streamed in 1 MB blocks) in MB/s of the file's size;
- reading the same file with pandas (`pd.read_parquet`, `pd.read_csv`), the step every pipeline does anyway.
Target: hashing a file costs less than reading it (ratio > 1: hashing is that many times faster than reading).

Tables: the same rows in memory.
- `frame_digest` (ours: `pandas.util.hash_pandas_object` over every row, then SHA-256);
- MLflow's own dataset digest (`mlflow.data.digest_utils.compute_pandas_digest`), which hashes the first 10,000 rows only;
- the naive way: `hashlib.sha256(pickle.dumps(df))`.
Each side is checked before it is timed: ours and pickle change when the last row changes; MLflow's is printed as is.

Usage:   .venv/bin/python bench/versioning.py [--rows 2000000] [--repeat 3]
"""
import argparse
import hashlib
import pickle
import tempfile
import time
from pathlib import Path

import pandas as pd

from mlops_course.core import file_sha256
from mlops_course.data import make_churn, write_table
from mlops_course.versioning import frame_digest


def best(fn, repeat: int) -> float:
    "Best wall time of `repeat` calls, in seconds."
    times = []
    for _ in range(repeat):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from mlflow.data.digest_utils import compute_pandas_digest

    df = make_churn(args.rows, seed=1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-versioning-"))
    files = {"parquet": write_table(df, tmp/"churn.parquet"), "csv": write_table(df, tmp/"churn.csv")}
    readers = {"parquet": pd.read_parquet, "csv": pd.read_csv}
    rows = []
    for kind, path in files.items():
        mb = path.stat().st_size / 1e6
        t_hash, t_read = best(lambda: file_sha256(path), args.repeat), best(lambda: readers[kind](path), args.repeat)
        rows.append({"what": f"{kind} file ({mb:,.0f} MB)", "ours": "file_sha256", "ours s": t_hash, "ours MB/s": mb / t_hash,
                     "alternative": f"pd.read_{kind}", "alt s": t_read, "alt MB/s": mb / t_read, "ratio": t_read / t_hash})

    changed = df.copy(); changed.iloc[-1, 1] = changed.iloc[-1, 1] + 1  # the last row's age
    assert frame_digest(df) != frame_digest(changed)
    assert hashlib.sha256(pickle.dumps(df)).digest() != hashlib.sha256(pickle.dumps(changed)).digest()
    mlflow_sees = compute_pandas_digest(df) != compute_pandas_digest(changed)
    mb = df.memory_usage(deep=True).sum() / 1e6
    t_ours = best(lambda: frame_digest(df), args.repeat)
    for name, fn in {"MLflow compute_pandas_digest": lambda: compute_pandas_digest(df),
                     "sha256(pickle.dumps(df))": lambda: hashlib.sha256(pickle.dumps(df)).hexdigest()}.items():
        t_alt = best(fn, args.repeat)
        rows.append({"what": f"DataFrame ({mb:,.0f} MB in memory)", "ours": "frame_digest", "ours s": t_ours, "ours MB/s": mb / t_ours,
                     "alternative": name, "alt s": t_alt, "alt MB/s": mb / t_alt, "ratio": t_alt / t_ours})
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.float_format", "{:,.3f}".format):
        print(f"{args.rows:,} rows, best of {args.repeat}; ratio = alternative's time / ours (> 1: ours is faster)\n")
        print(table.to_string(index=False))
    print(f"\nMLflow's digest notices a change in the last row: {mlflow_sees} (it hashes the first 10,000 rows only)")


if __name__ == "__main__":
    main()
