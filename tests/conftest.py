import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the environment the tests run in holds the console scripts


def run_cli(*args, env=None, cwd=ROOT, timeout=900):
    "Run the real `mlops-course` command; return the completed process (text)."
    return subprocess.run([str(BIN/"mlops-course"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def sigint_default() -> None:
    "preexec_fn for a child that must take Ctrl-C as at a terminal: a suite started in the background inherits SIGINT ignored."
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def raises(call, *fragments):
    "The call raises a WorkbenchError whose message holds every fragment; return the message."
    from mlops_course.core import WorkbenchError
    with pytest.raises(WorkbenchError) as info: call()
    msg = str(info.value)
    for f in fragments: assert f in msg, (f, msg)
    return msg


@pytest.fixture
def work_env(tmp_path):
    "An environment whose work dir is a fresh temporary folder (nothing lands in the repo)."
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_COURSE_") and k != "MLFLOW_TRACKING_URI"}
    env["MLOPS_COURSE_WORK_DIR"] = str(tmp_path/"work")
    return env
