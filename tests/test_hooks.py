"""Hooks on release events (issue 26, item 6), with real processes: a hook program written
here and started by a real worker ([sys.executable, script], the payload on stdin), a real
loopback HTTP server in a thread for POST hooks, and the real CLI. Waiting is on the jobs'
own end (bounded by the hooks' timeouts), never a sleep."""

from __future__ import annotations

import http.server
import json
import os
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from relman.catalog import Metric
from relman.errors import IntegrityError
from relman.jobs import queue

pytestmark = pytest.mark.heavy  # every hook runs in a worker process

SCRIPT = r'''
import json, os, pathlib, sys, threading
data = sys.stdin.read()
out = pathlib.Path(sys.argv[1])
mode = sys.argv[2] if len(sys.argv) > 2 else "ok"
out.write_text(json.dumps({"stdin": data, "argv": sys.argv[1:], "event_env": os.environ.get("RELMAN_HOOK_EVENT"),
                           "pid": os.getpid(), "cwd": os.getcwd()}))
print("hook says hello")
if mode == "fail":
    print("boom: the chat bot is down", file=sys.stderr)
    sys.exit(1)
if mode == "hang":
    threading.Event().wait(300)  # a hook that hangs (planted): relman must time it out
'''


@pytest.fixture
def script(tmp_path: Path) -> Path:
    p = tmp_path / "hook_prog.py"
    p.write_text(SCRIPT)
    return p


@pytest.fixture
def tiny(catalog, tmp_path: Path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"w" * 64)
    v1 = catalog.add_version("tiny", {"w.bin": f}, format="raw")
    return v1


def _events(catalog, kind: str) -> list[dict[str, Any]]:
    return [{**e, "payload": json.loads(e["payload"])}
            for e in catalog.query("SELECT * FROM events WHERE kind = ? ORDER BY seq", [kind])]


def _hook_jobs(catalog) -> list[dict[str, Any]]:
    return sorted(queue.list_jobs(catalog, kind="hook"), key=lambda j: j["id"])


def _phase(catalog, version_id: int) -> str:
    return catalog.get_version(version_id).phase


# -- program hooks -------------------------------------------------------------------------------------
def test_program_hook_gets_the_payload_on_stdin_after_the_promotion(catalog, tiny, run_cli, script, tmp_path):
    out = tmp_path / "got.json"
    pwned = tmp_path / "PWNED"
    r = run_cli("hooks", "add", "--on", "promoted", "--model", "tiny", "--", sys.executable, str(script), str(out),
                "ok", f"$(touch {pwned}); touch {pwned}")
    assert r.exit_code == 0, r.output
    other = tmp_path / "other.json"
    catalog.add_version("other", {"w.bin": tmp_path / "w.bin"}, format="raw")
    assert run_cli("hooks", "add", "--on", "promoted", "--model", "other", "--", sys.executable, str(script),
                   str(other)).exit_code == 0

    r = run_cli("promote", "tiny@1.0.0", "--to", "candidate")
    assert r.exit_code == 0, r.output
    assert "draft → candidate" in r.output and "hook 1" in r.output and ": ok" in r.output

    got = json.loads(out.read_text())
    payload = json.loads(got["stdin"])
    assert payload["event"] == "promoted" and payload["ref"] == "tiny@1.0.0"
    assert (payload["from"], payload["to"], payload["test"]) == ("draft", "candidate", False)
    assert got["event_env"] == "promoted"
    assert got["argv"][-1] == f"$(touch {pwned}); touch {pwned}"  # one literal argument: no shell
    assert not pwned.exists()
    assert not other.exists()  # a hook on another model is not triggered
    assert _phase(catalog, tiny.id) == "candidate"

    (job,) = _hook_jobs(catalog)
    assert job["status"] == "succeeded" and job["result"]["exit_code"] == 0
    assert "hook says hello" in Path(job["log_path"]).read_text()  # its stdout is the job's log
    (ev,) = _events(catalog, "hook-run")
    assert ev["payload"]["ok"] is True and ev["payload"]["hook"] == 1 and ev["payload"]["job"] == job["id"]
    assert ev["model"] == "tiny" and ev["version"] == "1.0.0"
    assert run_cli("verify").exit_code == 0


@pytest.mark.parametrize("mode, cause, text", [("fail", "bad_input", "exited with code 1: boom: the chat bot is down"),
                                               ("hang", "timeout", "did not finish within 1 s")])
def test_a_failing_hook_leaves_the_promotion_done_and_is_reported(catalog, tiny, run_cli, script, tmp_path,
                                                                   mode, cause, text):
    out = tmp_path / "got.json"
    assert run_cli("hooks", "add", "--on", "promoted", "--timeout", "1", "--", sys.executable, str(script), str(out),
                   mode).exit_code == 0
    r = run_cli("promote", "tiny@1.0.0", "--to", "candidate")
    assert r.exit_code == 0, r.output  # the promotion stands
    assert "draft → candidate" in r.output
    assert "warning: hook 1" in r.output and text in r.output and f"FAILED ({cause})" in r.output
    assert _phase(catalog, tiny.id) == "candidate"
    (job,) = _hook_jobs(catalog)
    assert job["status"] == "failed" and job["cause"] == cause and text in job["error"]
    (ev,) = _events(catalog, "hook-run")
    assert ev["payload"]["ok"] is False and ev["payload"]["cause"] == cause
    assert len(_events(catalog, "promote")) == 1
    if mode == "hang":  # the hook process was killed at its timeout, not left behind
        pid = json.loads(out.read_text())["pid"]
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert run_cli("verify").exit_code == 0


def test_rejected_rolled_back_and_gate_failed_hooks(catalog, tmp_path, run_cli, script):
    from relman.release import policy, workflow

    f = tmp_path / "w.bin"
    f.write_bytes(b"w" * 64)
    v1 = catalog.add_version("tiny", {"w.bin": f}, format="raw")
    f.write_bytes(b"v" * 64)
    v2 = catalog.add_version("tiny", {"w.bin": f}, format="raw")
    f.write_bytes(b"u" * 64)
    v3 = catalog.add_version("tiny", {"w.bin": f}, format="raw")
    outs = {e: tmp_path / f"{e}.json" for e in ("rejected", "rolled-back", "gate-failed")}
    for event, out in outs.items():
        assert run_cli("hooks", "add", "--on", event, "--", sys.executable, str(script), str(out)).exit_code == 0
    policy.set_policy(catalog, "tiny", {"gates": {"candidate": [], "staging": [], "production": ["latency_p95_ms <= 1"]},
                                        "approvals": {}},
                      actor="tester")
    for v in (v1, v2):  # both reach production, v2 replacing v1
        catalog.add_metrics(v.id, [Metric("latency", "latency_p95_ms", 0.5, {"device": "cpu"})])
        for phase in ("candidate", "staging", "production"):
            if phase == "production":
                workflow.rollout(catalog, v.id, 100, who="tester")
            workflow.promote(catalog, v.id, phase, who="tester")
    catalog.add_metrics(v3.id, [Metric("latency", "latency_p95_ms", 12.0, {"device": "cpu"})])
    workflow.promote(catalog, v3.id, "candidate", who="tester")
    workflow.promote(catalog, v3.id, "staging", who="tester")
    workflow.rollout(catalog, v3.id, 100, who="tester")

    r = run_cli("promote", "tiny@" + v3.version, "--to", "production")
    assert r.exit_code == 1 and "gates refuse" in r.output and "hook 3" in r.output, r.output
    gate = json.loads(json.loads(outs["gate-failed"].read_text())["stdin"])
    assert gate["event"] == "gate-failed" and gate["to"] == "production"
    assert [f["rule"] for f in gate["failing"]] == ["latency_p95_ms <= 1"]
    assert _phase(catalog, v3.id) == "staging"

    r = run_cli("rollback", "tiny", "--why", "bad latency in the field")
    assert r.exit_code == 0 and "hook 2" in r.output, r.output
    back = json.loads(json.loads(outs["rolled-back"].read_text())["stdin"])
    assert (back["event"], back["restored"], back["removed"]) == ("rolled-back", v1.version, v2.version)

    r = run_cli("reject", "tiny@" + v3.version, "--why", "too slow")
    assert r.exit_code == 0 and "hook 1" in r.output, r.output
    rej = json.loads(json.loads(outs["rejected"].read_text())["stdin"])
    assert (rej["event"], rej["ref"], rej["why"]) == ("rejected", f"tiny@{v3.version}", "too slow")
    assert [j["status"] for j in _hook_jobs(catalog)] == ["succeeded"] * 3
    assert len(_events(catalog, "hook-run")) == 3


# -- POST hooks ----------------------------------------------------------------------------------------
@pytest.fixture
def server() -> Iterator[dict[str, Any]]:
    """A real HTTP server on 127.0.0.1 in a thread: records each POST; /redirect answers 302
    to /elsewhere (which a hook must never reach)."""
    seen: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append({"path": self.path, "body": body, "headers": dict(self.headers)})
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/elsewhere")
            elif self.path == "/broken":
                self.send_response(500)
            else:
                self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "seen": seen}
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_post_hook_reaches_a_loopback_server(catalog, tiny, run_cli, server):
    assert run_cli("hooks", "add", "--on", "promoted", "--to", "candidate", "--post",
                   server["url"] + "/hooks/relman").exit_code == 0
    assert run_cli("hooks", "add", "--on", "promoted", "--to", "staging", "--post",
                   server["url"] + "/never").exit_code == 0
    r = run_cli("promote", "tiny@1.0.0", "--to", "candidate")
    assert r.exit_code == 0 and ": ok" in r.output, r.output
    (hit,) = server["seen"]  # the staging-only hook did not fire
    assert hit["path"] == "/hooks/relman"
    assert hit["headers"]["Content-Type"] == "application/json" and hit["headers"]["X-Relman-Event"] == "promoted"
    body = json.loads(hit["body"])
    assert (body["event"], body["ref"], body["to"]) == ("promoted", "tiny@1.0.0", "candidate")
    (job,) = _hook_jobs(catalog)
    assert job["status"] == "succeeded" and job["result"]["http_status"] == 200


def test_post_hook_does_not_follow_a_redirect_and_reports_http_errors(catalog, tiny, run_cli, server):
    assert run_cli("hooks", "add", "--on", "promoted", "--post", server["url"] + "/redirect").exit_code == 0
    assert run_cli("hooks", "add", "--on", "promoted", "--post", server["url"] + "/broken").exit_code == 0
    r = run_cli("promote", "tiny@1.0.0", "--to", "candidate")
    assert r.exit_code == 0, r.output
    assert [h["path"] for h in sorted(server["seen"], key=lambda h: h["path"])] == ["/broken", "/redirect"]
    jobs = _hook_jobs(catalog)
    assert [j["status"] for j in jobs] == ["failed", "failed"]
    assert "redirects are not followed" in jobs[0]["error"] and "HTTP 500" in jobs[1]["error"]
    assert "warning: hook 1" in r.output and "warning: hook 2" in r.output
    assert _phase(catalog, tiny.id) == "candidate"


# -- refusals at add time ------------------------------------------------------------------------------
@pytest.mark.parametrize("args, text", [
    (["--on", "promoted", "--post", "http://10.0.0.1:8080/x"], "10.0.0.1 is not a loopback address"),
    (["--on", "promoted", "--post", "http://chat.example.com/x"], "chat.example.com is not a loopback address"),
    (["--on", "promoted", "--post", "http://127.0.0.1.nip.io/x"], "is not a loopback address"),
    (["--on", "promoted", "--post", "http://u:secret@127.0.0.1/x"], "must not carry a user name or password"),
    (["--on", "promoted", "--post", "ftp://127.0.0.1/x"], "not an http:// or https:// URL"),
    (["--on", "promoted", "--post", "http://127.0.0.1:99999/x"], "not a usable URL"),
    (["--on", "promoted", "--", "/no/such/program"], "program '/no/such/program' not found"),
    (["--on", "promoted", "--", "no-such-program-xyz"], "not found on PATH"),
    (["--on", "promoted"], "give either a program to run"),
    (["--on", "promoted", "--post", "http://127.0.0.1/x", "--", "/bin/true"], "not both or neither"),
    (["--on", "rejected", "--to", "staging", "--", "/bin/true"], "'promoted' hooks only"),
    (["--on", "promoted", "--timeout", "nan", "--", "/bin/true"], "timeout must be more than 0"),
    (["--on", "promoted", "--timeout", "0", "--", "/bin/true"], "timeout must be more than 0"),
    (["--on", "promoted", "--model", "nosuch", "--", "/bin/true"], "nosuch"),
    (["--on", "promoted", "--allow-remote", "--", "/bin/true"], "--post hooks only"),
])
def test_bad_hooks_are_refused_with_one_line_and_nothing_stored(catalog, tiny, run_cli, args, text):
    before = catalog.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    r = run_cli("hooks", "add", *args)
    assert r.exit_code != 0
    assert text in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, r.output
    assert catalog.conn.execute("SELECT COUNT(*) FROM hooks").fetchone()[0] == 0
    assert catalog.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == before


def test_allow_remote_is_explicit_per_hook(catalog, tiny, run_cli):
    r = run_cli("hooks", "add", "--on", "promoted", "--allow-remote", "--post", "http://chat.example.com/relman")
    assert r.exit_code == 0, r.output
    (ev,) = _events(catalog, "hook-add")
    assert ev["payload"]["allow_remote"] is True and ev["payload"]["url"] == "http://chat.example.com/relman"


# -- tampering -----------------------------------------------------------------------------------------
def test_an_edited_hooks_row_is_detected_and_never_run(catalog, tiny, run_cli, script, tmp_path):
    good, evil = tmp_path / "good.json", tmp_path / "evil.json"
    assert run_cli("hooks", "add", "--on", "integrity-failed", "--", sys.executable, str(script),
                   str(good)).exit_code == 0
    assert run_cli("hooks", "add", "--on", "integrity-failed", "--", sys.executable, str(script),
                   str(tmp_path / "harmless.json")).exit_code == 0
    assert run_cli("verify").exit_code == 0
    attacker = sqlite3.connect(catalog.db_path, isolation_level=None)
    attacker.execute("UPDATE hooks SET argv = ? WHERE id = 2", [json.dumps([sys.executable, str(script), str(evil)])])
    attacker.close()

    r = run_cli("verify")
    assert r.exit_code != 0 and "hooks row [2]" in r.output and "argv" in r.output, r.output
    # verify itself fires the catalog's integrity-failed hooks: the intact one only
    assert "queued as job" in r.output and "hook 2 was changed outside relman" in r.output, r.output
    (from_verify,) = _hook_jobs(catalog)
    assert from_verify["params"]["hook_id"] == 1 and from_verify["params"]["payload"]["source"] == "verify"
    r = run_cli("promote", "tiny@1.0.0", "--to", "candidate")
    assert r.exit_code == 1 and "fails verification" in r.output, r.output
    assert "hook 2 was changed outside relman" in r.output and "not run" in r.output
    assert _phase(catalog, tiny.id) == "draft"
    payload = json.loads(json.loads(good.read_text())["stdin"])  # the intact hook ran, told why
    assert payload["event"] == "integrity-failed"  # (the last of verify's run and the promotion's wrote it)
    assert "fails verification" in payload["error"] or "relman verify found" in payload["error"]
    assert not evil.exists()
    jobs = _hook_jobs(catalog)  # only the intact hook was queued, by verify and by the refused promotion
    assert [j["params"]["hook_id"] for j in jobs] == [1, 1]
    with pytest.raises(IntegrityError, match="changed outside relman"):
        from relman.release.hooks import queue_test

        queue_test(catalog, 2)
    assert not evil.exists()


# -- test and remove -------------------------------------------------------------------------------------
def test_hooks_test_runs_a_sample_payload_and_remove_is_audited(catalog, tiny, run_cli, script, tmp_path):
    out = tmp_path / "t.json"
    assert run_cli("hooks", "add", "--on", "promoted", "--", sys.executable, str(script), str(out)).exit_code == 0
    assert run_cli("hooks", "add", "--on", "promoted", "--", sys.executable, str(script), str(out),
                   "fail").exit_code == 0
    r = run_cli("hooks", "test", "1")
    assert r.exit_code == 0 and ": ok" in r.output, r.output
    assert json.loads(json.loads(out.read_text())["stdin"])["test"] is True
    r = run_cli("hooks", "test", "2")
    assert r.exit_code == 1 and "failed its test run" in r.output, r.output
    listed = json.loads(run_cli("hooks", "list", "--json").output)
    assert [h["id"] for h in listed] == [1, 2]
    assert run_cli("hooks", "remove", "2").exit_code == 0
    assert [h["id"] for h in json.loads(run_cli("hooks", "list", "--json").output)] == [1]
    assert run_cli("hooks", "remove", "2").exit_code == 1
    assert run_cli("hooks", "test", "2").exit_code == 1
    assert [e["payload"]["hook"] for e in _events(catalog, "hook-remove")] == [2]
    assert _phase(catalog, tiny.id) == "draft"  # a test run changes no phase
    assert run_cli("verify").exit_code == 0
