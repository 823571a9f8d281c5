"""Tags (model@tag), the search language (no eval), and the import guard."""

from __future__ import annotations

import json

import pytest

from housekeeping_support import planted_version
from relman.catalog import Metric
from relman.errors import HousekeepingError, ModelImportError, NotFound


def test_tags_resolve_when_unique_and_are_audited(catalog, tmp_path, run_cli):
    from relman.app.tags import tag_version, untag_version

    a = planted_version(catalog, tmp_path, "m", "a", shared=b"s", unique=b"a")
    b = planted_version(catalog, tmp_path, "m", "b", shared=b"s", unique=b"b")
    assert run_cli("tag", a.ref, "baseline").exit_code == 0
    assert catalog.resolve("m@baseline").id == a.id
    tag_version(catalog, b.ref, "paper")
    tag_version(catalog, b.ref, "baseline")
    with pytest.raises(NotFound, match="tag 'baseline' is on 2 versions of m"):
        catalog.resolve("m@baseline")
    with pytest.raises(HousekeepingError, match="already has tag"):
        tag_version(catalog, b.ref, "paper")
    untag_version(catalog, a.ref, "baseline")
    assert catalog.resolve("m@baseline").id == b.id
    with pytest.raises(HousekeepingError, match="has no tag 'nope' .*baseline, paper"):
        untag_version(catalog, b.ref, "nope")
    r = run_cli("untag", b.ref, "paper")
    assert r.exit_code == 0 and "baseline" in r.output
    with pytest.raises(NotFound, match="neither a version .* nor a tag of m"):
        catalog.resolve("m@paper")
    kinds = [(e["kind"], e["version"], e["payload"].get("tag")) for e in catalog.events() if "tag" in e["kind"]]
    assert kinds == [("tag", "1.0.0", "baseline"), ("tag", "1.1.0", "paper"), ("tag", "1.1.0", "baseline"),
                     ("untag", "1.0.0", "baseline"), ("untag", "1.1.0", "paper")]
    assert not catalog.verify_audit()
    assert json.loads(run_cli("show", b.ref, "--json").output)["tags"] == ["baseline"]


@pytest.mark.parametrize("bad, message", [
    ("two words", "whitespace"), ("tab\there", "whitespace"), ("bell\x07", "control"),
    ("zero\u200bwidth", "invisible"), ("a@b", "'@'"), ("latest", "would read as"), ("production", "would read as"),
    ("1.2.0", "would read as"), ("", "needs a name"), ("x" * 65, "longer than"),
])
def test_bad_tag_names_are_refused_in_one_line(catalog, tmp_path, run_cli, bad, message):
    from relman.app.tags import tag_version

    a = planted_version(catalog, tmp_path, "m", "a", shared=b"s", unique=b"a")
    with pytest.raises(HousekeepingError, match=message) as e:
        tag_version(catalog, a.ref, bad)
    assert "\n" not in str(e.value)
    assert catalog.tags(a.id) == []


def test_search_by_tag_recipe_phase_text_and_metric_conditions(catalog, tmp_path, run_cli):
    from relman.app.release import promote
    from relman.app.search import SearchError, parse_query, search
    from relman.app.tags import tag_version

    base = planted_version(catalog, tmp_path, "sentiment", "a", shared=b"s", unique=b"a")
    int8 = catalog.add_version("sentiment", {"w.bin": tmp_path / "sentiment-a" / "shared.bin"}, format="onnx",
                               recipe={"name": "ort-int8"}, parents=[(base.id, None)])
    vit = planted_version(catalog, tmp_path, "digits", "v", shared=b"s", unique=b"v")
    catalog.add_metrics(base.id, [Metric("quality", "accuracy", 0.93), Metric("latency", "latency_p95_ms", 20.0)])
    catalog.add_metrics(int8.id, [Metric("quality", "accuracy", 0.88), Metric("latency", "latency_p95_ms", 7.5)])
    catalog.add_metrics(int8.id, [Metric("quality", "accuracy", 0.91)])  # the newest value counts
    tag_version(catalog, int8.ref, "fast")
    promote(catalog, vit.ref, "candidate", why="t", override=True)

    def refs(q):
        return [f"{r.model}@{r.version}" for r in search(catalog, q)]

    assert refs("accuracy>0.9") == [base.ref, int8.ref]
    assert refs("accuracy>0.9 latency_p95_ms<=10") == [int8.ref]
    assert refs("accuracy>=0.92") == [base.ref]
    assert refs("accuracy!=0.93") == [int8.ref]  # versions without the metric never match a condition
    assert refs("tag:fast") == [int8.ref] and refs("tag:f*") == [int8.ref]
    assert refs("recipe:ort-int8") == [int8.ref] and refs("format:onnx") == [int8.ref]
    assert refs("phase:candidate") == [vit.ref] and refs("digits") == [vit.ref]
    assert refs("sentiment phase:draft") == [base.ref, int8.ref]
    assert refs("") == [vit.ref, base.ref, int8.ref]
    for bad, message in [("accuracy>", "not a metric condition"), ("accuracy>>0.9", "not a metric condition"),
                         ("__import__('os').system('x')>1", "not a metric condition"),
                         ("owner:bob", "unknown search field 'owner:'"), ("tag:", "needs a value"),
                         ("'unclosed", "cannot read the query")]:
        with pytest.raises(SearchError, match=message):
            parse_query(bad)
    out = json.loads(run_cli("search", "accuracy>0.9", "tag:fast", "--json").output)
    assert [(r["model"], r["version"], r["tags"]) for r in out] == [("sentiment", int8.version, ["fast"])]
    r = run_cli("search", "accuracy=high")
    assert r.exit_code == 1 and "error:" in r.output and "\n" == r.output[-1] and r.output.count("\n") == 1
    assert "no version matches" in run_cli("search", "tag:none").output


def test_import_guard_refuses_another_architecture_naming_both(catalog, tiny_vit, tiny_bert, run_cli):
    assert run_cli("import", str(tiny_vit), "--model", "digits-vit").exit_code == 0
    r = run_cli("import", str(tiny_bert), "--model", "digits-vit")
    assert r.exit_code == 1
    assert "ViTForImageClassification (image-classification)" in r.output
    assert "BertForSequenceClassification (text-classification)" in r.output and "--new-architecture" in r.output
    assert [v.version for v in catalog.versions("digits-vit")] == ["1.0.0"]
    assert catalog.orphan_blobs() == []  # the refusal came before anything was stored
    assert run_cli("import", str(tiny_vit), "--model", "digits-vit").exit_code == 0  # same architecture: fine
    r = run_cli("import", str(tiny_bert), "--model", "digits-vit", "--new-architecture")
    assert r.exit_code == 0, r.output
    v = catalog.resolve("digits-vit@latest")
    assert v.architecture == "BertForSequenceClassification" and "holds ViT" in v.meta["new_architecture"]


def test_import_guard_ignores_deleted_versions(catalog, tiny_vit, tiny_bert):
    from relman.app.housekeeping import delete_version
    from relman.app.models import import_model

    v = import_model(catalog, tiny_vit, "reused-name")
    with pytest.raises(ModelImportError, match="holds ViT"):
        import_model(catalog, tiny_bert, "reused-name")
    delete_version(catalog, v.ref, why="name reused for a text model")
    assert import_model(catalog, tiny_bert, "reused-name").version == "1.1.0"


def test_proposed_model_name_comes_from_the_folder(tmp_path):
    from relman.app.models import propose_model_name

    assert propose_model_name(tmp_path / "My BERT (fine-tuned)", ["digits-vit"]) == "my-bert-fine-tuned"
    assert propose_model_name(tmp_path / "weights.safetensors", []) == "weights"
    assert propose_model_name(tmp_path / "digits-vit", ["digits-vit"]) == "digits-vit-2"
    assert propose_model_name(tmp_path / "@@@", []) == "model"


def test_every_housekeeping_command_has_help(run_cli):
    import click

    from relman.commands.housekeeping_cmds import COMMANDS

    for cmd in COMMANDS:
        assert cmd.help and len(cmd.help.strip()) > 10, cmd.name
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and p.name != "help":
                assert p.help, f"{cmd.name} {p.opts}"
        r = run_cli(cmd.name, "--help")
        assert r.exit_code == 0 and "Usage:" in r.output
