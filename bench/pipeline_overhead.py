"""Pipeline runner benchmarks, side by side in one run; prints ratios against the targets.

1. Tracking overhead: the course pipeline through `mlops-course run` (MLflow parent and child runs,
   artifacts, hashes, HTML, report) against the same notebooks with the same parameters executed by
   bare papermill in sequence (its Python API, one process). Target: <= 1.15x.
2. No-op re-run: `mlops-course run` on the unchanged pipeline against its cold run.
   Target: <= 2 s wall and <= 5% of the cold run.

Both sides are timed as whole commands (a fresh interpreter each), in fresh work dirs.
Usage: .venv/bin/python bench/pipeline_overhead.py [--rows 20000] [--repeat 1]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

BARE = textwrap.dedent("""
    import sys, papermill as pm
    from pathlib import Path
    from mlops_course.config import load_settings
    from mlops_course.pipeline import load_spec
    spec = load_spec(sys.argv[1], sys.argv[2:])
    for step in spec.steps.values():
        folder = spec.data_dir.parent / "bare" / step.name
        folder.mkdir(parents=True, exist_ok=True)
        for p in step.outputs.values(): p.parent.mkdir(parents=True, exist_ok=True)
        params = {**step.parameters, **{k: str(p) for k, p in {**step.inputs, **step.outputs}.items()}}
        pm.execute_notebook(str(step.notebook), str(folder / f"{step.name}.ipynb"), parameters=params,
                            cwd=str(folder), kernel_name="python3", progress_bar=False)
""")


def timed(cmd, env):
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - start
    if r.returncode != 0: sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return took


def env_with(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_COURSE_") and k != "MLFLOW_TRACKING_URI"}
    env["MLOPS_COURSE_WORK_DIR"] = str(work)
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000, help="rows the ingest step generates")
    ap.add_argument("--repeat", type=int, default=1, help="repetitions of each measurement (best is kept)")
    args = ap.parse_args()
    spec, params = ROOT/"nbs/pipeline/course.yaml", [f"ingest.n_rows={args.rows}"]
    runner_cmd = [str(BIN/"mlops-course"), "run", str(spec)] + [a for p in params for a in ("-p", p)]
    cold, bare, noop = [], [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            bare.append(timed([sys.executable, "-c", BARE, str(spec), *params], env_with(Path(b))))
            cold.append(timed(runner_cmd, env_with(Path(a))))
            noop.append(timed(runner_cmd, env_with(Path(a))))
    cold_s, bare_s, noop_s = min(cold), min(bare), min(noop)
    rows = [("bare papermill, in sequence", bare_s, "", ""),
            ("mlops-course run (cold)", cold_s, f"{cold_s / bare_s:.2f}x bare", "target <= 1.15x: " + ("met" if cold_s / bare_s <= 1.15 else "MISSED")),
            ("mlops-course run (no-op re-run)", noop_s, f"{noop_s / cold_s:.1%} of cold",
             "target <= 2 s and <= 5%: " + ("met" if noop_s <= 2 and noop_s / cold_s <= 0.05 else "MISSED"))]
    print(f"course pipeline, {args.rows} rows, best of {args.repeat}, {os.cpu_count()} cores")
    print(f"{'what':<34}{'seconds':>9}  {'ratio':<16}target")
    for what, s, ratio, target in rows: print(f"{what:<34}{s:>9.2f}  {ratio:<16}{target}")


if __name__ == "__main__":
    main()
