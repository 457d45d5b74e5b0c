"""Online serving benchmark: our server (`mlops-course serve`) side by side with `mlflow models serve`, same model, one run.

Both servers load the same registered model (a logistic-regression churn Pipeline logged like the course
pipeline's register step, in a temporary MLflow store) and run as their own process on a free loopback
port, one worker each: `mlops-course serve` (Starlette on uvicorn, checks every request against the
signature) and `mlflow models serve --env-manager local` (MLflow's scoring server on uvicorn, `/invocations`).
Both get the same body, MLflow's `dataframe_split` form; ours is asked for predictions only
("probabilities": false), so both do the same work, and the predictions are checked to be equal.

For each server and each payload (a single row; a batch of 1,000 rows) it sends --requests requests from
--clients concurrent clients (one keep-alive HTTP connection each, bodies encoded beforehand) and reports
requests/s, rows/s and the p50/p99 latency of a request; then the ratios ours / MLflow's.
Usage: .venv/bin/python bench/serving.py [--clients 4] [--requests 400] [--batch 1000]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODEL = "churn-model"


def register_model(folder: Path) -> tuple[str, object, object]:
    "Train, log and register a small churn model @prod in a store under `folder`; return the URI, the model and test rows."
    import mlflow
    import skops.io
    from mlflow.models import infer_signature
    from mlops_course.data import make_churn, plain_columns
    from mlops_course.prep import build_preprocessor, clean, split
    from mlops_course.train import build_model
    churn, _ = clean(make_churn(5_000, seed=42))
    X_train, X_test, y_train, _ = split(churn, test_size=0.2, seed=42)
    model = build_model(build_preprocessor(X_train, exclude=["customer_id"]), "logistic_regression").fit(X_train, y_train)
    X = plain_columns(X_test)
    uri = f"sqlite:///{folder}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    with warnings.catch_warnings(), mlflow.start_run():
        warnings.simplefilter("ignore")
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=MODEL,
                                        signature=infer_signature(X, model.predict(X)), input_example=X.head(3),
                                        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
                                        pip_requirements=["scikit-learn", "pandas", "numpy", "skops"])
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "prod", info.registered_model_version)
    return uri, model, X


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, ready_url: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None: sys.exit(f"{cmd[0]} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200: return proc
        except httpx.HTTPError: pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"{' '.join(cmd)} did not answer {ready_url} in 120 s:\n{log.read_text()[-3000:]}")


def load(url: str, body: bytes, clients: int, requests: int) -> tuple[float, np.ndarray, list]:
    "Send `requests` POSTs from `clients` threads; return the wall time, each request's latency, and the last answer."
    per_client = [requests // clients + (i < requests % clients) for i in range(clients)]
    latencies, answers, errors = [], [], []

    def client(n: int) -> None:
        with httpx.Client(timeout=120, headers={"Content-Type": "application/json"}) as http:
            http.post(url, content=body)  # warm the connection
            for _ in range(n):
                t = time.perf_counter()
                r = http.post(url, content=body)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200: errors.append(f"{r.status_code}: {r.text[:300]}")
            answers.append(r.json())

    start_t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool: list(pool.map(client, per_client))
    wall = time.perf_counter() - start_t
    if errors: sys.exit(f"{url}: {len(errors)} failed requests, e.g. {errors[0]}")
    return wall, np.array(latencies), answers[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients")
    ap.add_argument("--requests", type=int, default=400, help="requests per server and payload")
    ap.add_argument("--batch", type=int, default=1000, help="rows in a batch request")
    args = ap.parse_args()
    from mlops_course.data import make_churn, plain_columns
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        uri, model, X = register_model(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_COURSE_")}
        env.update(MLFLOW_TRACKING_URI=uri, MLOPS_COURSE_WORK_DIR=str(tmp/"work"))
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # mlflow models serve runs `uvicorn` by name
        ours_port, mlflow_port = free_port(), free_port()
        servers = {
            "mlops-course serve": (start([str(BIN/"mlops-course"), "serve", "--port", str(ours_port), "--no-access-log", "--max-rows", str(max(args.batch, 10_000))],
                                         env, f"http://127.0.0.1:{ours_port}/health", tmp/"ours.log"),
                                   f"http://127.0.0.1:{ours_port}/predict", {"probabilities": False}),
            "mlflow models serve": (start([str(BIN/"mlflow"), "models", "serve", "-m", f"models:/{MODEL}@prod", "--env-manager", "local",
                                           "-h", "127.0.0.1", "-p", str(mlflow_port)],
                                          env, f"http://127.0.0.1:{mlflow_port}/ping", tmp/"mlflow.log"),
                                    f"http://127.0.0.1:{mlflow_port}/invocations", {}),
        }
        batch = plain_columns(make_churn(args.batch, seed=7).drop(columns="target"))
        payloads = {"single row": X.head(1), f"batch of {args.batch:,}": batch}
        results = {}
        try:
            for pname, df in payloads.items():
                records = json.loads(df.to_json(orient="records"))
                split_form = {"columns": list(df.columns), "data": [list(r.values()) for r in records]}
                expected = model.predict(df).tolist()
                for sname, (_, url, extra) in servers.items():
                    body = json.dumps({"dataframe_split": split_form, **extra}).encode()
                    wall, lat, answer = load(url, body, args.clients, args.requests)
                    assert answer["predictions"] == expected, f"{sname} predicts otherwise on the {pname}"
                    results[pname, sname] = {"rps": len(lat) / wall, "rows/s": len(lat) * len(df) / wall,
                                             "p50": np.percentile(lat, 50) * 1000, "p99": np.percentile(lat, 99) * 1000}
        finally:
            for proc, _, _ in servers.values():
                proc.terminate()
                proc.wait(20)
    print(f"online serving, same model and body, {args.clients} clients x {args.requests} requests per cell, "
          f"loopback, one worker per server, {os.cpu_count()} cores")
    print(f"{'payload':<16}{'server':<22}{'req/s':>9}{'rows/s':>11}{'p50 ms':>9}{'p99 ms':>9}")
    for (pname, sname), r in results.items():
        print(f"{pname:<16}{sname:<22}{r['rps']:>9.1f}{r['rows/s']:>11,.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}")
    print("ratios, ours / MLflow's (throughput: higher is better; latency: lower is better)")
    for pname in payloads:
        o, m = results[pname, "mlops-course serve"], results[pname, "mlflow models serve"]
        print(f"{pname:<16}req/s {o['rps'] / m['rps']:.2f}x   p50 {o['p50'] / m['p50']:.2f}x   p99 {o['p99'] / m['p99']:.2f}x")


if __name__ == "__main__":
    main()
