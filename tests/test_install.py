"""The Makefile's install: which torch it asks for (a dry run, nothing installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def torch_install_line(
    tmp_path: Path,
    *,
    pip_config: bool,
    nvidia: bool,
    extra: tuple[str, ...] = (),
    uv_env: dict[str, str] | None = None,
    uv_toml: str | None = None,
) -> str:
    """The line of `make -n install` that installs torch, on a Linux machine whose pip is configured
    (files and environment) or not, with an NVIDIA driver or not, and uv configured through its
    environment (`uv_env`) or its user file (`uv_toml`, the text of ~/.config/uv/uv.toml) or not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # uv's user file is looked for there
    env.update(uv_env or {})
    if uv_toml is not None:
        (tmp_path / "config" / "uv").mkdir(parents=True)
        (tmp_path / "config" / "uv" / "uv.toml").write_text(uv_toml)
    if not pip_config:
        env["PIP_CONFIG_FILE"] = os.devnull  # pip reads no configuration file
    else:
        env["PIP_FIND_LINKS"] = str(tmp_path)
    if nvidia:
        fake = tmp_path / "bin"
        fake.mkdir()
        (fake / "nvidia-smi").write_text("#!/bin/sh\n")
        (fake / "nvidia-smi").chmod(0o755)
        env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    out = subprocess.run(
        ["make", "-n", "install", f"VENV={tmp_path / 'venv'}", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (line,) = [line for line in out.splitlines() if "import torch" in line]
    return line


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="the CPU index is chosen on Linux")
def test_linux_without_a_gpu_takes_torch_from_the_cpu_index(tmp_path):
    line = torch_install_line(tmp_path, pip_config=False, nvidia=False)
    assert f"torch==2.13.0 {CPU_INDEX}" in line


@pytest.mark.parametrize(
    ("pip_config", "nvidia", "extra"),
    [
        (True, False, ()),  # pip names its own wheels: they are used
        (False, True, ()),  # a GPU machine: PyPI's CUDA build
        (False, False, ("TORCH_INDEX=",)),  # asked for PyPI's
    ],
)
def test_torch_comes_from_pypi_or_pips_own_sources_otherwise(tmp_path, pip_config, nvidia, extra):
    line = torch_install_line(tmp_path, pip_config=pip_config, nvidia=nvidia, extra=extra)
    assert "torch==2.13.0" in line
    assert "--index-url" not in line


def test_a_torch_spec_of_ones_own_is_taken_as_given(tmp_path):
    spec = "torch --index-url https://download.pytorch.org/whl/cu124"
    line = torch_install_line(tmp_path, pip_config=False, nvidia=False, extra=(f"TORCH_SPEC={spec}",))
    assert spec in line
    assert "whl/cpu" not in line


@pytest.mark.parametrize(
    ("uv_env", "uv_toml"),
    [
        ({"UV_INDEX_URL": "https://mirror.example/simple"}, None),
        ({"UV_DEFAULT_INDEX": "https://mirror.example/simple"}, None),
        (None, 'index-url = "https://mirror.example/simple"\n'),
        (None, '[[index]]\nurl = "https://mirror.example/simple"\ndefault = true\n'),
        (None, 'find-links = ["/srv/wheels"]\n'),
    ],
)
def test_uvs_own_index_or_wheels_are_used(tmp_path, uv_env, uv_toml):
    """uv installs torch first: an index or wheels that uv is configured with (environment or its user
    file) are the machine's sources, as pip's are, and the CPU index is not imposed on them."""
    line = torch_install_line(tmp_path, pip_config=False, nvidia=False, uv_env=uv_env, uv_toml=uv_toml)
    assert "torch==2.13.0" in line
    assert "--index-url" not in line


def test_a_uv_file_that_names_no_index_changes_nothing(tmp_path):
    line = torch_install_line(tmp_path, pip_config=False, nvidia=False, uv_toml="native-tls = true\n")
    assert CPU_INDEX in line
