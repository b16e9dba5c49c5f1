"""A release: one version (extproc/__init__.py) that the wheel, `aigrid --version`, the tools' pin and
the CHANGELOG carry; the image installs what deploy/install.sh installs, with the same fix-up; and the
wheel `python -m build` makes, pip-installed into a clean virtualenv, serves a request through a real
Envoy with a real Redis (the clean venv's `aigrid envoy-config` renders Envoy's config, its `aigrid
serve` is the ext_proc server; Envoy and the stand-in sites come from this checkout's tools)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

from extproc import __version__

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import chat_body, http, make_stack  # noqa: E402
from extproc.tools.stack.procs import free_port, port_open, start_envoy  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _extras(text: str, pattern: str) -> set[str]:
    m = re.search(pattern, text, re.M)
    assert m, pattern
    return set(m.group(1).split(","))


def test_version_command():
    out = subprocess.run([sys.executable, "-m", "extproc.cli", "--version"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == f"aigrid {__version__}"


def test_one_version_everywhere():
    gateway = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    tools = tomllib.loads((ROOT / "tools" / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "version" not in gateway and "version" in gateway["dynamic"]
    assert "version" not in tools and "version" in tools["dynamic"]
    assert f"aigrid=={__version__}" in tools["dependencies"]
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[{re.escape(__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M), \
        f"CHANGELOG.md has no section for {__version__}"
    assert "## [Unreleased]" in changelog


def test_image_installs_what_the_install_script_installs():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    install = (ROOT / "deploy" / "install.sh").read_text(encoding="utf-8")
    image = _extras(dockerfile, r"^ARG EXTRAS=(\S+)$")
    script = _extras(install, r"^EXTRAS=(\S+)$")
    assert image == script, f"Dockerfile EXTRAS {sorted(image)} != install.sh {sorted(script)}"
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"])
    assert image <= declared
    assert "restore-otel-proto.sh" in install and re.search(r"^\s*restore-otel-proto\.sh python$", dockerfile, re.M)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend is in this venv and nothing is fetched; -x: `wheel` is listed in
    # build-system.requires for old setuptools, which setuptools>=70 does not need.
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "-x", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True, timeout=300)
    (whl,) = out.glob("*.whl")
    assert whl.name == f"aigrid-{__version__}-py3-none-any.whl"
    meta = zipfile.ZipFile(whl).read(f"aigrid-{__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {__version__}\n" in meta
    return whl


@pytest.fixture(scope="module")
def clean_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with nothing but the wheel and its declared dependencies (pip resolves them)."""
    env_dir = tmp_path_factory.mktemp("clean") / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    r = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=600, env=_clean_env())
    assert r.returncode == 0, r.stderr[-3000:]
    return env_dir


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


@pytest.mark.slow
def test_wheel_in_a_clean_venv_serves_through_envoy(clean_venv: Path, tmp_path: Path):
    py, aigrid = clean_venv / "bin" / "python", clean_venv / "bin" / "aigrid"
    run = lambda *a: subprocess.run([*a], capture_output=True, text=True, timeout=120, env=_clean_env(), cwd=tmp_path)  # noqa: E731
    # The installed copy, not this checkout, and only the gateway's wheel.
    where = run(str(py), "-c", "import extproc, importlib.util as u; print(extproc.__file__); print(u.find_spec('extproc.tools'))")
    lines = where.stdout.split()
    assert where.returncode == 0 and lines[0].startswith(str(clean_venv)) and lines[1] == "None", where.stdout + where.stderr
    assert run(str(aigrid), "--version").stdout.strip() == f"aigrid {__version__}"
    # With no extra installed (no pynvml, no tools), the command line still starts.
    helped = run(str(aigrid), "--help")
    assert helped.returncode == 0 and "serve" in helped.stdout and "agent" in helped.stdout, helped.stderr

    st = make_stack(tmp_path)
    try:
        ports = (free_port(), free_port(), free_port(), free_port())
        cfg_path = tmp_path / "aigrid.yaml"
        cfg_path.write_text(yaml.safe_dump(st.config_dict(ports)), encoding="utf-8")
        envoy_path = tmp_path / "envoy.yaml"
        r = run(str(aigrid), "envoy-config", "--config", str(cfg_path), "--output", str(envoy_path))
        assert r.returncode == 0, r.stderr
        serve = st.group.start("serve-clean", [str(aigrid), "serve", "--config", str(cfg_path)], env=_clean_env())
        serve.wait_ready(lambda: port_open(ports[0]) and port_open(ports[1]), 60, "the clean venv's serve listening")
        start_envoy(st.group, envoy_path, ports[3], name="envoy-clean")
        st.publish_idle()
        res = http("POST", f"http://127.0.0.1:{ports[2]}/v1/chat/completions", chat_body("hello from a wheel"),
                   {"content-type": "application/json"})
        assert res.status == 200, res.body[:500]
        assert json.loads(res.body)["choices"]
        # The installed gateway chose the site: the request reached it with its routing header.
        got = [(site, rec["headers"].get("x-aigrid-site")) for site in st.sites for rec in st.records(site)]
        assert len(got) == 1 and got[0][0] == got[0][1], got
        # The decision was the installed gateway's: its metrics count it.
        metrics = http("GET", f"http://127.0.0.1:{ports[1]}/metrics").body.decode()
        assert re.search(r'^aigrid_decisions_total\{[^}]*\} [1-9]', metrics, re.M), metrics[:2000]
    finally:
        st.group.stop_all()
