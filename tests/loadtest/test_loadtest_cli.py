"""`aigrid loadtest` from the command line: bad input exits non-zero naming what and where; a real run
through Envoy prints the table and writes the report."""

from __future__ import annotations

import json

import pytest

from extproc.cli import main
from extproc.tools.stack.procs import free_port


def test_bad_workload_file_names_file_and_key(tmp_path, capsys):
    f = tmp_path / "w.yaml"
    f.write_text("rate: 2\nrequests: 10\nsla:\n  realtime: -1\n")
    assert main(["loadtest", "--workload", str(f), "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and "sla.realtime" in err


def test_bad_flags_exit_2(tmp_path, capsys):
    assert main(["loadtest", "--rag", "0", "--chat", "0", "--no-progress", "--out", str(tmp_path)]) == 2
    assert "mix" in capsys.readouterr().err


def test_wrong_admin_address_exits_1(tmp_path, capsys):
    port = free_port()
    rc = main(["loadtest", "--admin", f"http://127.0.0.1:{port}", "--requests", "1", "--no-progress", "--out", str(tmp_path)])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"Envoy admin at http://127.0.0.1:{port}" in err and "unreachable" in err
    assert not (tmp_path / "loadtest.json").exists()


@pytest.mark.slow
def test_cli_run_through_envoy(stack_factory, tmp_path, capsys):
    st = stack_factory()
    gw = st.add_gateway()
    out = tmp_path / "report"
    rc = main([
        "loadtest", "--url", gw.url(""), "--admin", f"http://127.0.0.1:{gw.admin_port}",
        "--metrics", f"http://127.0.0.1:{gw.metrics_port}/metrics", "--concurrency", "2", "--requests", "12",
        "--rag", "0.5", "--chat", "0.5", "--seed", "5", "--no-progress", "--out", str(out), "--name", "x",
    ])
    assert rc == 0
    text = capsys.readouterr().out
    assert "requests ok / sent" in text and "12 / 12" in text
    doc = json.loads((out / "loadtest.json").read_text())
    assert doc["results"]["x"]["summary"]["ok"] == 12
    assert (out / "throughput.png").exists() and (out / "latency.png").exists()
