"The real `mlops-course serve` and `mlops-course score` against a tiny model registered in a temporary MLflow store: bad requests, load, curl, SIGTERM, batch files."
import json
import os
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from conftest import BIN, ROOT, run_cli

MODEL = "churn-model"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    "A logistic-regression churn model logged like the course pipeline's register step, registered, @prod; and the env that points at it."
    import warnings

    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    import mlops_course
    from mlops_course.data import make_churn, plain_columns
    from mlops_course.prep import build_preprocessor, clean, split
    from mlops_course.train import build_model

    tmp = tmp_path_factory.mktemp("serve")
    churn, _ = clean(make_churn(1_500, seed=1))
    X_train, X_test, y_train, _ = split(churn, test_size=0.3, seed=1)
    model = build_model(build_preprocessor(X_train, exclude=["customer_id"]), "logistic_regression").fit(X_train, y_train)
    X = plain_columns(X_test)
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("serve-tests")
    run = client.create_run(exp)
    mlflow.set_tracking_uri(uri)
    with warnings.catch_warnings(), mlflow.start_run(run_id=run.info.run_id):
        warnings.simplefilter("ignore")
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=MODEL,
                                        signature=infer_signature(X, model.predict(X)), input_example=X.head(3),
                                        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
                                        pip_requirements=["scikit-learn", "pandas", "numpy", "skops"],
                                        code_paths=[str(Path(mlops_course.__file__).parent)])
    client.set_registered_model_alias(MODEL, "prod", info.registered_model_version)
    client.set_registered_model_alias(MODEL, "candidate", info.registered_model_version)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_COURSE_") and k != "MLFLOW_TRACKING_URI"}
    env.update(MLOPS_COURSE_WORK_DIR=str(tmp/"work"), MLFLOW_TRACKING_URI=uri)
    big = plain_columns(make_churn(2_500, seed=5).drop(columns="target"))
    return {"tmp": tmp, "env": env, "model": model, "X": X, "big": big}


def _records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records"))


@pytest.fixture(scope="module")
def server(store):
    "`mlops-course serve --port 0` as a real process; its URL comes from the line it prints."
    log = open(store["tmp"]/"server.log", "w")
    proc = subprocess.Popen([str(BIN/"mlops-course"), "serve", "--port", "0", "--max-rows", "2000", "--max-bytes", "1000000"],
                            cwd=ROOT, env=store["env"], stdout=subprocess.PIPE, stderr=log, text=True)
    line = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    assert line and "http://127.0.0.1:" in line[0], f"no URL from the server: {line} {(store['tmp']/'server.log').read_text()[-2000:]}"
    url = re.search(r"http://127\.0\.0\.1:\d+", line[0]).group(0)
    yield {"proc": proc, "url": url, "log": store["tmp"]/"server.log"}
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    log.close()


def test_health_and_metadata(server, store):
    h = httpx.get(server["url"] + "/health", timeout=10).json()
    assert h["status"] == "ok" and (h["model"], h["version"], h["alias"]) == (MODEL, "1", "prod")
    meta = httpx.get(server["url"] + "/metadata", timeout=10).json()
    assert [c["name"] for c in meta["columns"]] == list(store["X"].columns) and meta["max_rows"] == 2000


BAD = {  # name: (request keywords, status, words the message must hold)
    "malformed JSON": (dict(content=b'{"rows": [{"age": 3', headers={"Content-Type": "application/json"}), 400, ["not valid JSON"]),
    "not an object": (dict(json=[1, 2, 3]), 400, ["JSON object", "list"]),
    "no rows key": (dict(json={"data": []}), 422, ["'rows'", "'data'"]),
    "rows not a list": (dict(json={"rows": {"age": 3}}), 422, ["'rows' must be a list"]),
    "row not an object": (dict(json={"rows": [[1, 2]]}), 422, ["rows[0]", "object"]),
    "missing column": ("drop:tenure_months", 422, ["missing column", "'tenure_months'"]),
    "extra column": ("add:nickname", 422, ["unexpected column", "'nickname'"]),
    "wrong type": ("row1:age=thirty", 422, ["'age'", "rows[1]", "'thirty'", "number"]),
    "number for text": ("row0:contract=7", 422, ["'contract'", "rows[0]", "text"]),
    "null in required": ("row0:region=None", 422, ["'region'", "required", "rows[0]"]),
    "empty batch": (dict(json={"rows": []}), 422, ["empty batch"]),
    "too many rows": ("many:2001", 413, ["2,001", "at most 2,000"]),
    "body too large (Content-Length)": (dict(content=b"[" + b" " * 1_200_000 + b"]", headers={"Content-Type": "application/json"}), 413, ["1,000,000 bytes"]),
    "body too large (chunked)": ("chunked", 413, ["1,000,000 bytes"]),
    "not JSON content type": (dict(content=b"age=30", headers={"Content-Type": "text/plain"}), 415, ["text/plain", "application/json"]),
    "bad split": (dict(json={"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}}), 422, ["dataframe_split.data[0]", "1 values"]),
}


def _bad_request(kind, row):
    if isinstance(kind, dict): return kind
    if kind == "chunked":  # no Content-Length: the server must count the bytes as they arrive
        return dict(content=iter([b'{"rows": ['] + [b" " * 100_000] * 12 + [b"]}"]), headers={"Content-Type": "application/json"})
    op, _, arg = kind.partition(":")
    if op == "drop": return dict(json={"rows": [{k: v for k, v in row.items() if k != arg}]})
    if op == "add": return dict(json={"rows": [{**row, arg: "x"}]})
    if op == "many": return dict(json={"rows": [row] * int(arg)})
    col, value = arg.split("=")
    value = {"None": None, "7": 7}.get(value, value)
    rows = [dict(row), dict(row)]
    rows[int(op[3:])][col] = value
    return dict(json={"rows": rows})


def test_bad_requests_are_named_and_the_server_keeps_serving(server, store):
    row = _records(store["X"].dropna().head(1))[0]
    with httpx.Client(base_url=server["url"], timeout=30) as http:
        for name, (kind, status, words) in BAD.items():
            r = http.post("/predict", **_bad_request(kind, row))
            assert r.status_code == status, (name, r.status_code, r.text)
            message = r.json()["error"]
            assert all(w in message for w in words), (name, message)
            assert http.get("/health").status_code == 200, name
        # a model error (infinity passes JSON and the signature, not the model) is a 500 with a message, on a live connection
        body = json.dumps({"rows": [row]}).replace(f'"age": {json.dumps(row["age"])}', '"age": Infinity')
        assert "Infinity" in body
        r = http.post("/predict", content=body.encode(), headers={"Content-Type": "application/json"})
        assert r.status_code == 500 and "the model failed" in r.json()["error"] and "infinity" in r.json()["error"].lower()
        assert http.get("/health").json()["status"] == "ok"
        assert http.get("/nowhere").status_code == 404 and http.get("/predict").status_code == 405


def test_curl_gets_predictions(server, store):
    row = _records(store["X"].head(1))
    r = subprocess.run(["/usr/bin/curl", "-s", "-X", "POST", "-H", "Content-Type: application/json",
                        "-d", json.dumps({"rows": row}), server["url"] + "/predict"], capture_output=True, text=True, timeout=30)
    answer = json.loads(r.stdout)
    assert r.returncode == 0 and answer["predictions"] == store["model"].predict(store["X"].head(1)).tolist()
    assert answer["model"] == MODEL and len(answer["probabilities"][0]) == 2


def test_concurrent_load(server, store):
    "16 clients x 25 requests, single rows and batches of 1,000 in every form: no 5xx, no failure, the model's own predictions."
    big = store["big"].head(1_000)
    expected_big = store["model"].predict(big).tolist()
    X = store["X"]
    expected_one = store["model"].predict(X).tolist()
    singles = [json.dumps({"rows": _records(X.iloc[[i]])}).encode() for i in range(len(X))]
    recs = _records(big)
    batches = [json.dumps({"rows": recs, "probabilities": False}).encode(),
               json.dumps({"dataframe_records": recs}).encode(),
               json.dumps({"dataframe_split": {"columns": list(big.columns), "data": [list(r.values()) for r in recs]}, "probabilities": False}).encode()]
    failures, statuses, health_waits = [], [], []
    stop = threading.Event()

    def client(c):
        with httpx.Client(base_url=server["url"], timeout=60, headers={"Content-Type": "application/json"}) as http:
            for i in range(25):
                batch = (i + c) % 5 == 0
                body = batches[(i + c) % 3] if batch else singles[(c * 25 + i) % len(singles)]
                try: r = http.post("/predict", content=body)
                except httpx.HTTPError as e:
                    failures.append(f"client {c} request {i}: {type(e).__name__}: {e}"); continue
                statuses.append(r.status_code)
                if r.status_code != 200: failures.append(f"client {c} request {i}: {r.status_code} {r.text[:200]}"); continue
                want = expected_big if batch else [expected_one[(c * 25 + i) % len(singles)]]
                if r.json()["predictions"] != want: failures.append(f"client {c} request {i}: other predictions")

    def watch_health():
        with httpx.Client(base_url=server["url"], timeout=30) as http:
            while not stop.is_set():
                t = time.perf_counter()
                assert http.get("/health").status_code == 200
                health_waits.append(time.perf_counter() - t)
                time.sleep(0.05)

    watcher = threading.Thread(target=watch_health, daemon=True)
    watcher.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool: list(pool.map(client, range(16)))
    took = time.perf_counter() - start
    stop.set(); watcher.join(10)
    assert not failures, failures[:5]
    assert len(statuses) == 16 * 25 and not any(s >= 500 for s in statuses)
    assert took < 90, f"load took {took:.0f}s"
    assert health_waits and max(health_waits) < 2.0, f"/health waited {max(health_waits):.2f}s during the load"


def test_sigterm_stops_cleanly(server):
    "Runs after the others (file order): SIGTERM, requests in flight finish, exit status 0."
    proc = server["proc"]
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0, server["log"].read_text()[-2000:]
    assert "Server stopped." in proc.stdout.read()
    with pytest.raises(httpx.ConnectError): httpx.get(server["url"] + "/health", timeout=2)


def test_serve_names_the_aliases_that_exist(store):
    r = run_cli("serve", "--alias", "production", "--port", "0", env=store["env"], timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "has no alias 'production'" in r.stderr and "@candidate (version 1)" in r.stderr and "@prod (version 1)" in r.stderr


def test_score_csv_and_parquet_in_chunks(store):
    big, tmp = store["big"], store["tmp"]
    expected = store["model"].predict(big)
    big.to_csv(tmp/"in.csv", index=False)
    big.to_parquet(tmp/"in.parquet")
    for src, dst in [("in.csv", "out.parquet"), ("in.parquet", "out.csv")]:
        r = run_cli("score", tmp/src, tmp/dst, "--chunk-rows", "1000", env=store["env"], timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"Wrote {tmp/dst}" in r.stdout
        out = pd.read_parquet(tmp/dst) if dst.endswith(".parquet") else pd.read_csv(tmp/dst)
        assert list(out.columns) == [*big.columns, "prediction"] and len(out) == len(big) > 1000
        assert np.array_equal(out["prediction"].to_numpy(), expected), (src, dst)
        assert np.allclose(out["monthly_charges"], big["monthly_charges"], equal_nan=True)


def test_score_bad_file_leaves_nothing(store):
    tmp = store["tmp"]
    bad = store["big"].astype({"age": object})
    bad.loc[1_499, "age"] = "forty"
    bad.to_csv(tmp/"bad.csv", index=False)
    r = run_cli("score", tmp/"bad.csv", tmp/"bad_scores.parquet", "--chunk-rows", "1000", env=store["env"], timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
    assert "rows 1,001-2,000" in r.stderr and "row 1,500 holds 'forty'" in r.stderr and "'age'" in r.stderr, r.stderr
    assert not [p for p in tmp.iterdir() if "bad_scores" in p.name]


def test_loading_a_model_leaves_mlflows_process_wide_uris_alone(store, tmp_path):
    "resolve_model reads another store than the process's: afterwards the registry still follows the tracking URI, and no MLFLOW_* variable was set for child processes."
    import mlflow
    from mlops_course.serve import resolve_model
    before = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mine.db")
        served = resolve_model(MODEL, "prod", store["env"]["MLFLOW_TRACKING_URI"])
        assert np.array_equal(np.asarray(served.model.predict(store["X"])), store["model"].predict(store["X"]))
        mlflow.set_tracking_uri(later := f"sqlite:///{tmp_path}/later.db")
        assert mlflow.get_registry_uri() == later and "MLFLOW_REGISTRY_URI" not in os.environ
    finally: mlflow.set_tracking_uri(before)
