"The churn generator at scale, and data sourcing from a real database file, measured in separate processes."
import subprocess
import sys

import pytest

from mlops_course.core import WorkbenchError
from mlops_course.data import make_churn, read_table, require_columns, sqlite_url, write_table

TEN_MILLION = 10_000_000


def _peak_mib(code: str) -> tuple[float, str]:
    "Run `code` in a fresh interpreter; return its peak resident memory (MiB) and what it printed."
    # VmHWM is this process's own high-water mark; getrusage's ru_maxrss keeps the parent's across exec on Linux
    wrapped = code + "\nhwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; print('PEAK', int(hwm.split()[1]) / 1024)"
    out = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, check=True, timeout=600).stdout
    peak = float(out.rsplit("PEAK", 1)[1])
    return peak, out


def test_ten_million_rows_stream_to_parquet_in_bounded_memory(tmp_path):
    path = tmp_path/"churn.parquet"
    peak, out = _peak_mib(f"from mlops_course.data import write_churn\n"
                          f"import pyarrow.parquet as pq\n"
                          f"p = write_churn({str(path)!r}, n_rows={TEN_MILLION}, progress=False)\n"
                          f"print('ROWS', pq.ParquetFile(p).metadata.num_rows)")
    assert f"ROWS {TEN_MILLION}" in out
    # the whole table would take ~320 MiB in memory; streaming keeps far below the interpreter + libraries + one block
    assert peak < 600, f"peak {peak:.0f} MiB"


def test_ten_million_rows_in_memory(tmp_path):
    peak, out = _peak_mib(f"from mlops_course.data import make_churn\n"
                          f"df = make_churn({TEN_MILLION})\n"
                          f"print('ROWS', len(df), 'MIB', df.memory_usage(deep=True).sum() / 2**20)")
    assert f"ROWS {TEN_MILLION}" in out
    frame_mib = float(out.split("MIB")[1].split()[0])
    assert frame_mib < 400 and peak < 2 * frame_mib + 400, f"frame {frame_mib:.0f} MiB, peak {peak:.0f} MiB"


def test_sql_roundtrip_keeps_rows_and_replaces_in_one_transaction(tmp_path):
    url = sqlite_url(tmp_path/"course.db")
    first = make_churn(500, seed=1)
    write_table(first, url, table="customers")
    # a write that fails half-way (an unsupported column type) leaves the old table whole
    with pytest.raises(WorkbenchError, match="customers"):
        write_table(first.assign(bad=[{"a": 1}] * len(first)), url, table="customers")
    back = read_table(url, table="customers", target="target")
    assert len(back) == 500 and back["customer_id"].tolist() == first["customer_id"].tolist()


def test_non_utf8_csv_names_the_file_and_the_fix(tmp_path):
    p = tmp_path/"latin.csv"
    p.write_bytes("nome,cidade\nJoão,São Paulo\n".encode("latin-1"))
    with pytest.raises(WorkbenchError, match="latin.csv.*encoding="):
        read_table(p)
    assert read_table(p, encoding="latin-1")["cidade"].tolist() == ["São Paulo"]


def test_require_columns_names_what_is_missing():
    df = make_churn(10)
    with pytest.raises(WorkbenchError, match="'churned'.*customer_id"):
        require_columns(df, ["target", "churned"], "step ingest")
