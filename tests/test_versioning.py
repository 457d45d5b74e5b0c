"Data versions: hashes of files and tables, their record on MLflow runs, what changed, and bad input."
import hashlib

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mlops_course.core import WorkbenchError, file_sha256
from mlops_course.data import make_churn, write_table
from mlops_course.versioning import (DIGEST_CHARS, diff_frames, file_version, frame_digest, frame_version, log_data_versions,
                                     run_data_versions, runs_using)


@pytest.fixture
def store(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("versions", artifact_location=(tmp_path/"artifacts").as_uri())
    return client, exp


def test_file_hash_is_streamed_sha256_of_the_bytes(tmp_path):
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # more than one block, not a multiple of it
    (tmp_path/"blob.bin").write_bytes(data)
    assert file_sha256(tmp_path/"blob.bin", chunk=1 << 16) == hashlib.sha256(data).hexdigest()


def test_frame_digest_sees_every_value_dtype_and_order():
    df = make_churn(30_000, seed=1, duplicate_rate=0.0)
    base = frame_digest(df)
    assert base == frame_digest(df.copy()) and base == frame_digest(df.set_index("customer_id", drop=False))
    late = df.copy(); late.loc[29_999, "support_calls"] += 1  # the very last row
    nulled = df.copy(); nulled.loc[15_000, "contract"] = None
    recast = df.astype({"age": "float64"})  # same values, another dtype
    renamed = df.rename(columns={"region": "area"})
    changed = [frame_digest(x) for x in (late, nulled, recast, renamed, df.iloc[::-1], df.iloc[:-1])]
    assert base not in changed and len(set(changed)) == len(changed)
    with pytest.raises(WorkbenchError, match="needs a pandas DataFrame"):
        frame_digest(df.to_numpy())


def test_file_version_reads_parquet_footer_and_rejects_bad_files(tmp_path):
    df = make_churn(2_000, seed=2)
    v = file_version(write_table(df, tmp_path/"c.parquet"))
    assert v.rows == len(df) and list(v.schema) == list(df.columns) and v.sha256 == file_sha256(tmp_path/"c.parquet")
    assert v.size_bytes == (tmp_path/"c.parquet").stat().st_size and v.digest == v.sha256[:DIGEST_CHARS]
    csv = file_version(write_table(df, tmp_path/"c.csv"))
    assert csv.rows is None and list(csv.schema) == list(df.columns)
    with pytest.raises(WorkbenchError, match="does not exist"):
        file_version(tmp_path/"missing.parquet")
    (tmp_path/"broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(WorkbenchError, match="broken.parquet' is not a readable Parquet file"):
        file_version(tmp_path/"broken.parquet")


def test_versions_are_recorded_on_runs_and_found_again(store, tmp_path):
    client, exp = store
    df = make_churn(3_000, seed=3)
    path = write_table(df, tmp_path/"train.parquet")
    reader, writer = (client.create_run(exp, run_name=n).info.run_id for n in ("reader", "writer"))
    log_data_versions(client, writer, {"train_path": file_version(path)}, "output")
    log_data_versions(client, reader, [file_version(path), frame_version(df, "in memory", "make_churn(3000, seed=3)")])
    got = run_data_versions(client.get_run(reader)).set_index("dataset")
    assert got.loc["train.parquet", ["direction", "sha256", "path", "rows"]].tolist() == ["input", file_sha256(path), str(path.resolve()), 3_000]
    assert got.loc["in memory", "sha256"] == frame_digest(df) and got.loc["in memory", "digest"] == frame_digest(df)[:DIGEST_CHARS]
    found = runs_using(client, file_sha256(path))
    assert sorted(zip(found.run_name, found.direction)) == [("reader", "input"), ("writer", "output")]
    assert runs_using(client, frame_digest(df)).run_name.tolist() == ["reader"]
    assert runs_using(client, hashlib.sha256(b"never seen").hexdigest()).empty
    with pytest.raises(WorkbenchError, match="full SHA-256"):
        runs_using(client, file_sha256(path)[:12])
    with pytest.raises(WorkbenchError, match="context must be"):
        log_data_versions(client, reader, [file_version(path)], "training")
    assert len(run_data_versions(client.get_run(reader))) == 2  # the refused call recorded nothing


def test_diff_frames_counts_changes_and_rejects_bad_keys():
    old = pd.DataFrame({"id": [1, 2, 3, 4], "x": [1.0, np.nan, 3.0, 4.0], "c": list("abcd")})
    new = pd.DataFrame({"id": [2, 3, 4, 5], "x": [np.nan, 3.5, 4.0, 5.0], "c": list("bcDe"), "extra": 1})
    d = diff_frames(old, new, key="id")
    assert d.summary() == {"added": 1, "removed": 1, "changed": 2}
    assert sorted(d.changed.id) == [3, 4] and d.added.id.tolist() == [5] and d.removed.id.tolist() == [1]
    assert d.columns.loc["x", "changed_values"] == 1 and d.columns.loc["c", "changed_values"] == 1  # NaN == NaN is no change
    assert d.columns.loc["extra", "note"] == "column added"
    with pytest.raises(WorkbenchError, match="no key column 'customer'"):
        diff_frames(old, new, key="customer")
    with pytest.raises(WorkbenchError, match="not unique in the new version"):
        diff_frames(old, pd.concat([new, new]), key="id")
