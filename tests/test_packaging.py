"Packaging, configuration files and the command's first impression."
import configparser
import re
import subprocess
import sys
import tomllib

import yaml

import mlops_course
from mlops_course.config import DEFAULTS, SECTION
from conftest import ROOT, run_cli

PYPROJECT = tomllib.loads((ROOT/"pyproject.toml").read_text())


def test_environment_yml_installs_what_pyproject_declares():
    "environment.yml takes every Python dependency from pyproject.toml, so the two cannot drift apart."
    env = yaml.safe_load((ROOT/"environment.yml").read_text())
    deps = env["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip == ["-e .[dev]"] and "dev" in PYPROJECT["project"]["optional-dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    python = next(d for d in conda if d.startswith("python"))
    assert python.removeprefix("python") == PYPROJECT["project"]["requires-python"]
    # nothing else pinned on the conda side that pyproject does not know about
    assert sorted(d for d in conda if not d.startswith("python")) == ["pip"]


def test_core_dependencies_are_declared():
    names = {re.split(r"[<>=\[ ]", d)[0].lower() for d in PYPROJECT["project"]["dependencies"]}
    assert {"jupyterlab", "papermill", "nbdev", "scikit-learn", "pandas", "mlflow", "matplotlib", "ipywidgets"} <= names


def test_import_is_light():
    "`import mlops_course` and its CLI module load no heavy library."
    code = ("import sys, mlops_course, mlops_course.cli, mlops_course.config, mlops_course.exercises;"
            "heavy = [m for m in ('pandas','numpy','sklearn','mlflow','papermill','matplotlib','nbformat') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported at module load: {out}"


def test_help_and_version():
    r = run_cli("--help")
    assert r.returncode == 0 and "chapters" in r.stdout and "exercises" in r.stdout
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"mlops-course {mlops_course.__version__}"


def test_settings_ini_documents_every_key():
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(ROOT/"settings.ini")
    assert list(cp[SECTION]) == list(DEFAULTS)


def test_settings_command_shows_overrides(work_env, tmp_path):
    work_env["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:5999"
    work_env["MLOPS_COURSE_SEED"] = "123"
    r = run_cli("settings", env=work_env)
    assert r.returncode == 0, r.stderr
    assert "http://127.0.0.1:5999" in r.stdout and re.search(r"seed\s+123", r.stdout)
    assert str(tmp_path/"work") in r.stdout and (tmp_path/"work").is_dir()


def test_bad_setting_is_one_clear_line(work_env, tmp_path):
    work_env["MLOPS_COURSE_BATCH_WORKERS"] = "many"
    r = run_cli("settings", env=work_env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error:") and "batch_workers" in r.stderr and "MLOPS_COURSE_BATCH_WORKERS" in r.stderr
    bad = tmp_path/"bad.ini"
    bad.write_text("[workbench]\nwork_dirr = x\n")
    r = run_cli("--settings", bad, "settings", env=work_env)
    assert r.returncode == 2 and "work_dirr" in r.stderr and "bad.ini" in r.stderr
