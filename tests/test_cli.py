import subprocess
import sys
import zipfile

import pytest

from cogcore.core.cli import JOBS
from cogcore.core.io import read_json


def cogcore(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cogcore.core.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_help_lists_every_job_and_unknown_jobs_fail():
    shown = cogcore("--help")
    assert shown.returncode == 0
    assert all(job in shown.stdout for job in JOBS)
    wrong = cogcore("trainn")
    assert wrong.returncode == 2 and "unknown job 'trainn'" in wrong.stderr


def test_group_overrides_and_multirun(tmp_path):
    run = cogcore("world", "world=tiny", f"run_dir={tmp_path}/single")
    assert run.returncode == 0, run.stderr
    assert read_json(tmp_path / "single" / "world" / "manifest.json")["config"]["train_worlds"] == 3
    again = cogcore("world", "world=tiny", f"run_dir={tmp_path}/single")
    assert "up to date" in again.stdout

    sweep = cogcore("world", "-m", "world=tiny", "world.seed=1,2", f"run_dir={tmp_path}/seed${{world.seed}}")
    assert sweep.returncode == 0, sweep.stderr
    checksums = {
        read_json(tmp_path / f"seed{s}" / "world" / "manifest.json")["corpus_sha256"] for s in (1, 2)
    }
    assert len(checksums) == 2

    bad = cogcore("world", "world=huge", f"run_dir={tmp_path}/bad")
    assert bad.returncode != 0 and "huge" in bad.stderr


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_job_composes(job):
    shown = cogcore(job, "--cfg", "job")
    assert shown.returncode == 0, shown.stderr
    assert "run_dir:" in shown.stdout


def test_normal_install_ships_the_configs(tmp_path):
    """A wheel (not the editable checkout) holds every subpackage and the Hydra configs."""
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(repo),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("cogcore-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "cogcore/conf/world/tiny.yaml",
        "cogcore/conf/stage/traces.yaml",
        "cogcore/core/cli.py",
        "cogcore/distill/teachers/oracle.py",
        "cogcore/retrieval/retriever.py",
    ):
        assert expected in names
    assert not any(n.startswith(("tests/", "cogcore/tests")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import cogcore.conf, hydra; from hydra import compose, initialize_config_module\n"
        f"assert cogcore.conf.__file__.startswith({str(site)!r}), cogcore.conf.__file__\n"
        "with initialize_config_module('cogcore.conf', version_base=None):\n"
        "    print(compose('pipeline').teacher.name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={"PYTHONPATH": str(site)}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "oracle"
