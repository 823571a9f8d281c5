"""The release CLI: help on every command, channels, cards to files, and clear refusals."""

from __future__ import annotations

import json

import click

from import_probe import heavy_loaded_by


def all_commands():
    from relman.commands.release_cmds import COMMANDS

    for cmd in COMMANDS:
        yield cmd
        if isinstance(cmd, click.Group):
            yield from cmd.commands.values()


def test_every_release_command_has_help(run_cli):
    for cmd in all_commands():
        assert cmd.help and len(cmd.help.strip()) > 10, cmd.name
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and p.name != "help":
                assert p.help, f"{cmd.name} {p.opts}"
    for args in (["promote"], ["channels", "write"], ["keys", "trust"], ["audit", "verify"], ["export"]):
        r = run_cli(*args, "--help")
        assert r.exit_code == 0 and "Usage:" in r.output


def test_channels_write_show_and_refusals(catalog, tiny_bert, tmp_path, run_cli):
    from relman.app import release
    from relman.app.models import import_model

    v = import_model(catalog, tiny_bert, "ch")
    release.set_policy(catalog, "ch", {"approvals": {}})
    release.promote(catalog, v, "candidate")
    release.promote(catalog, v, "staging")
    release.rollout(catalog, v, 10)
    out = tmp_path / "srv"
    r = run_cli("channels", "write", str(out))
    assert r.exit_code == 1 and "does not exist" in r.output and not out.exists()
    out.mkdir()
    assert run_cli("channels", "write", str(out)).exit_code == 0
    m = json.loads((out / "channels.json").read_text())
    assert m["format"] == "relman-channels" and m["models"]["ch"]["canary"]["share"] == 10
    assert {a["path"] for a in m["models"]["ch"]["canary"]["artifacts"]} >= {"config.json", "model.safetensors"}
    shown = json.loads(run_cli("channels", "show").output)
    assert shown["models"] == m["models"]
    r = run_cli("channels", "write")
    assert r.exit_code == 1 and "no channels folder" in r.output
    assert run_cli("channels", "set-dir", str(out)).exit_code == 0
    assert run_cli("rollout", v.ref, "--share", "30").exit_code == 0
    assert json.loads((out / "channels.json").read_text())["models"]["ch"]["canary"]["share"] == 30
    assert run_cli("channels", "set-dir", "--off").exit_code == 0
    assert run_cli("rollout", v.ref, "--share", "40").exit_code == 0
    assert json.loads((out / "channels.json").read_text())["models"]["ch"]["canary"]["share"] == 30
    assert sorted(p.name for p in out.iterdir()) == ["channels.json"]


def test_card_file_audit_show_and_clear_errors(catalog, tiny_bert, tmp_path, run_cli, monkeypatch):
    from relman.app.models import import_model

    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "no-keys"))
    v = import_model(catalog, tiny_bert, "cl")
    r = run_cli("card", v.ref, "-o", str(tmp_path / "README.md"))
    assert r.exit_code == 0 and (tmp_path / "README.md").read_text().startswith("---\nlibrary_name:")
    r = run_cli("card", v.ref, "--set", "colour=blue")
    assert r.exit_code == 1 and "unknown model-card field(s) colour" in r.output
    r = run_cli("card", v.ref, "-o", str(tmp_path / "nope" / "README.md"))
    assert r.exit_code == 1 and "does not exist" in r.output
    shown = json.loads(run_cli("audit", "show", "--model", "cl", "--json").output)
    assert shown[0]["kind"] == "import" and len(shown[0]["hash"]) == 64
    assert "import" in run_cli("audit", "show").output
    for args, message in [
        (["promote", "cl@9.9.9", "--to", "candidate"], "has no version 9.9.9"),
        (["promote", v.ref, "--to", "draft"], "already in draft"),
        (["promote", v.ref, "--to", "staging"], "does not allow draft → staging"),
        (["rollback", "nobody"], "unknown model 'nobody'"),
        (["rollout", v.ref, "--share", "5"], "only the staging version"),
        (["history", "cl", "--at", "yesterday"], "is not a date"),
        (["export", v.ref], "needs -o FILE"),
        (["export", v.ref, "-o", str(tmp_path / "b.relman")], "no signing key"),
    ]:
        r = run_cli(*args)
        assert r.exit_code != 0 and message in r.output, (args, r.output)
        assert "Traceback" not in r.output
    assert not catalog.verify_audit()


def test_release_modules_stay_light():
    """The release layer is imported at CLI/GUI start-up: no torch, transformers, onnxruntime or Qt."""
    assert heavy_loaded_by("relman.cli", "relman.app.release", "relman.app.bundles", "relman.release.bundle",
                           "relman.release.gates", "relman.release.workflow", "relman.release.modelcard",
                           "relman.release.audit", "relman.release.keys", "relman.release.channels",
                           "relman.release.policy", "relman.release.rules", "relman.release.approvals",
                           also=("sklearn",)) == []
