"""Batch benchmark: 40 small parameterized notebooks, side by side in one run; prints a table and ratios.

1. a shell loop of the `papermill` command, one notebook after another (what an instructor would type);
2. the papermill Python API in a loop, in one process (what a script would do);
3. `mlops-course batch` on a local process pool of 2 workers (warm kernels: forked from a pre-imported zygote);
4. the same with --cold-kernels (every kernel started from scratch), to show what the warm kernels bring;
5. `mlops-course batch --scheduler` on a Dask cluster of 2 local workers (started before the clock, as a cluster
   would be; each worker's first-job imports are inside the timing).

Targets: batch >= 5x the shell loop and >= 1.8x the sequential API on 2 cores.
Every side is timed as a whole command (a fresh interpreter), the batch including its MLflow records and reports. The MLflow
store is created before the clock, as it exists after a user's first run (making it once costs about a second, which the
first side timed would pay alone).
Usage: .venv/bin/python bench/batch.py [--n 40] [--workers 2]
"""
import argparse
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

PARAMS = "lr: float = 0.1  # learning rate\nsteps: int = 50  # gradient steps"
BODY = ("from mlops_course.pipeline import log_metrics\n"
        "w = 0.0\n"
        "for _ in range(steps): w -= lr * 2 * (w - 3)\n"
        "log_metrics(loss=(w - 3) ** 2)")

API = textwrap.dedent("""
    import sys, papermill as pm
    from pathlib import Path
    nb, out, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pm.execute_notebook(nb, str(out / f"run-{i}.ipynb"), parameters={"lr": round(0.01 * (i + 1), 4), "steps": 50},
                            kernel_name="python3", progress_bar=False)
""")


def timed(cmd, env, shell=False):
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, shell=shell, executable="/bin/bash" if shell else None)
    took = time.perf_counter() - start
    if r.returncode != 0: sys.exit(f"failed: {cmd if shell else ' '.join(map(str, cmd))}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return took


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dask(workers, env, folder):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([str(BIN/"dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    for i in range(workers):
        procs.append(subprocess.Popen([str(BIN/"dask"), "worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"],
                                      env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from distributed import Client
    with Client(address, timeout=60) as c: c.wait_for_workers(workers, timeout=120)
    return address, procs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="notebooks in the batch")
    ap.add_argument("--workers", type=int, default=2, help="local workers (and Dask workers)")
    ap.add_argument("--skip-shell", action="store_true", help="skip the (slow) shell loop")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    cell = new_code_cell(PARAMS)
    cell.metadata["tags"] = ["parameters"]
    nb = tmp/"descent.ipynb"
    nbformat.write(new_notebook(cells=[cell, new_code_cell(BODY)], metadata={"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}}), nb)
    lrs = [round(0.01 * (i + 1), 4) for i in range(args.n)]
    (tmp/"grid.yaml").write_text("grid:\n  lr: [" + ", ".join(map(str, lrs)) + "]\n  steps: [50]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_COURSE_") and k != "MLFLOW_TRACKING_URI"}
    env["MLOPS_COURSE_WORK_DIR"] = str(tmp/"work")
    store = "from mlops_course.config import load_settings; from mlops_course.pipeline import _Tracker; _Tracker(load_settings())"
    subprocess.run([sys.executable, "-c", store], env=env, cwd=ROOT, check=True, capture_output=True)  # the store exists, as after a first run
    cores = os.cpu_count()
    print(f"{args.n} notebooks, {args.workers} workers, {cores} cores, load average {os.getloadavg()[0]:.2f}; folder {tmp}", flush=True)

    results = {}
    batch = [str(BIN/"mlops-course"), "batch", str(nb), "--grid", str(tmp/"grid.yaml"), "--workers", str(args.workers)]
    results["mlops-course batch (process pool, warm kernels)"] = timed(batch + ["--out", str(tmp/"ours"), "--name", "warm"], env)
    print(f"  ours: {results['mlops-course batch (process pool, warm kernels)']:.1f} s", flush=True)
    results["mlops-course batch --cold-kernels"] = timed(batch + ["--out", str(tmp/"cold"), "--name", "cold", "--cold-kernels"], env)
    print(f"  ours, cold kernels: {results['mlops-course batch --cold-kernels']:.1f} s", flush=True)
    address, procs = start_dask(args.workers, env, tmp)
    try:
        dask_cmd = [str(BIN/"mlops-course"), "batch", str(nb), "--grid", str(tmp/"grid.yaml"), "--scheduler", address]
        results[f"mlops-course batch --scheduler (Dask, {args.workers} workers)"] = timed(dask_cmd + ["--out", str(tmp/"dask"), "--name", "dask"], env)
        print(f"  Dask: {results[f'mlops-course batch --scheduler (Dask, {args.workers} workers)']:.1f} s", flush=True)
    finally:
        for p in reversed(procs): p.terminate()
        for p in procs: p.wait(30)
    results["papermill Python API, sequential"] = timed([sys.executable, "-c", API, str(nb), str(tmp/"api"), str(args.n)], env)
    print(f"  papermill API: {results['papermill Python API, sequential']:.1f} s", flush=True)
    if not args.skip_shell:
        (tmp/"shell").mkdir()
        loop = "; ".join(f"{shlex.quote(str(BIN/'papermill'))} -k python3 --no-progress-bar {shlex.quote(str(nb))} "
                         f"{shlex.quote(str(tmp/'shell'/f'run-{i}.ipynb'))} -p lr {lr} -p steps 50 >/dev/null 2>&1 || exit 1"
                         for i, lr in enumerate(lrs))
        results["shell loop of `papermill`"] = timed(loop, env, shell=True)
        print(f"  shell loop: {results['shell loop of `papermill`']:.1f} s", flush=True)

    ours = results["mlops-course batch (process pool, warm kernels)"]
    print(f"\n{'':52} {'seconds':>8} {'per nb':>8} {'ours is':>9}")
    for k, v in results.items():
        print(f"{k:52} {v:8.1f} {v / args.n:8.2f} {v / ours:8.2f}x")
    api = results["papermill Python API, sequential"]
    print(f"\nours vs sequential API: {api / ours:.2f}x (target >= 1.8x)")
    if "shell loop of `papermill`" in results:
        print(f"ours vs shell loop:     {results['shell loop of `papermill`'] / ours:.2f}x (target >= 5x)")
    print(f"warm vs cold kernels:   {results['mlops-course batch --cold-kernels'] / ours:.2f}x")


if __name__ == "__main__":
    main()
