"""No prompt text in logs or metrics by default: the request path's log calls pass no request data, and a
logged exception's message (which may quote the input) is withheld unless AIGRID_LOG_REQUEST_TEXT=1."""

from __future__ import annotations

import ast
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

from extproc.gateway.observe import redact

REPO = Path(__file__).resolve().parents[2]
# Code that runs per request (or holds request text): every log call there is checked.
REQUEST_PATH = ["gateway/server", "gateway/request", "gateway/routing", "gateway/compression", "gateway/observe",
                "gateway/loadmap"]
# Names that hold request data in these modules.
FORBIDDEN = {"body", "text", "texts", "prompt", "prompts", "messages", "parsed", "content", "headers", "req",
             "request", "key", "api_key", "token", "payload", "segments", "question", "docs", "documents", "out"}
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def _log_calls(tree: ast.AST):  # type: ignore[no-untyped-def]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LOG_METHODS:
            base = node.func.value
            if isinstance(base, ast.Name) and base.id in ("log", "logger", "logging"):
                yield node


def _names(node: ast.AST) -> set[str]:
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
    return out


def scan() -> tuple[int, list[str]]:
    bad, seen = [], 0
    for folder in REQUEST_PATH:
        root = REPO / "extproc" / folder
        if not root.is_dir():  # a moved package must be followed here, not silently skipped
            raise FileNotFoundError(root)
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for call in _log_calls(tree):
                seen += 1
                args = [*call.args, *(k.value for k in call.keywords if k.arg != "exc_info")]
                hit = set().union(*(_names(a) for a in args)) & FORBIDDEN if args else set()
                if hit:
                    bad.append(f"{path.relative_to(REPO)}:{call.lineno} logs {sorted(hit)}")
    return seen, bad


def test_request_path_log_calls_pass_no_request_data() -> None:
    # In a fresh interpreter: after hypothesis has moved the recursion limit, CPython 3.11's ast.parse can
    # fail with "AST constructor recursion depth mismatch".
    code = f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_no_request_text_in_logs as t; print(json.dumps(t.scan()))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    seen, bad = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen > 10  # the scan found the log calls (it is not vacuous)
    assert bad == [], "\n".join(bad)


def _boom(secret: str) -> None:
    try:
        {}[secret]
    except KeyError as exc:
        raise ValueError(f"could not parse {secret!r}") from exc


def test_logged_exceptions_keep_frames_and_types_but_not_their_text() -> None:
    buf = io.StringIO()
    logger = logging.getLogger("aigrid.test.redact")
    logger.propagate = False
    h = logging.StreamHandler(buf)
    logger.addHandler(h)
    redact.install(logger)
    redact.install(logger)  # idempotent
    assert sum(isinstance(f, redact.WithholdExceptionText) for f in h.filters) == 1
    secret = "-".join(["the", "users", "xyzzy", "prompt"])  # built at run time: not in any source line
    try:
        _boom(secret)
    except ValueError:
        logger.exception("processor error in %s; continuing unchanged", "request_body")
    out = buf.getvalue()
    assert "xyzzy" not in out
    assert "processor error in request_body" in out
    assert "builtins.KeyError: <message withheld" in out and "builtins.ValueError: <message withheld" in out
    assert "_boom" in out  # the frames are still there for debugging
    logger.removeHandler(h)


def test_opt_in_shows_the_text() -> None:
    code = (
        "import logging, io\n"
        "from extproc.gateway.observe import redact\n"
        "logging.basicConfig()\nredact.install()\n"
        "try:\n    raise ValueError('visible prompt')\nexcept ValueError:\n    logging.getLogger('x').exception('e')\n"
    )
    env_off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    env_on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**__import__("os").environ, redact.OPT_IN_ENV: "1"})
    assert "visible prompt" not in env_off.stderr and "withheld" in env_off.stderr
    assert "visible prompt" in env_on.stderr
