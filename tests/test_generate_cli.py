"""`relman generate`: one generate job in a worker (--wait drives it), answers side by side.
Planted signal: the trained LM and its ONNX child give the same answers and exact-match count
on the planted facts (most of them right); bad requests are refused before anything is queued."""

from __future__ import annotations

import json

import pytest

from recipe_support import compress_job as compress  # noqa: E402

pytestmark = pytest.mark.heavy


def test_generate_command_answers_side_by_side(catalog, run_cli, trained_lm_dir, tmp_path):
    from relman.app.models import import_model
    from relman.modelio.trained_lm import planted_facts

    parent = import_model(catalog, trained_lm_dir, "tlm", task="causal-lm")
    child = compress(catalog, parent.id, "onnx-export")
    facts = planted_facts()[:10]
    f = tmp_path / "facts.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"Q: {q}\nA:", "answer": a}) + "\n" for q, a in facts),
                 encoding="utf-8")
    r = run_cli("generate", parent.ref, child.ref, "-f", str(f), "-n", "6", "--wait", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.output[r.output.index("{"):])
    by_ref = {v["ref"]: v for v in result["versions"]}
    p, c = by_ref[parent.ref], by_ref[child.ref]
    assert p["engine"] == "torch" and c["engine"] == "relman-onnx-kv"
    assert p["exact_match"] >= 6 and c["exact_match"] == p["exact_match"] and p["answered"] == 10
    assert [o["text"] for o in c["outputs"]] == [o["text"] for o in p["outputs"]]
    r = run_cli("generate", parent.ref, "-p", "Return a new", "-n", "4", "--wait")
    assert r.exit_code == 0 and "'Return a new'" in r.output and "tokens/s" in r.output, r.output


def test_generate_refuses_bad_requests_before_queueing(catalog, run_cli, tiny_bert):
    from relman.app.models import import_model

    bert = import_model(catalog, tiny_bert, "bert")
    r = run_cli("generate", bert.ref, "-p", "hi")
    assert r.exit_code != 0 and "only causal-lm versions generate" in r.output
    r = run_cli("generate", bert.ref)
    assert r.exit_code != 0 and "give at least one prompt" in r.output
    assert catalog.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
