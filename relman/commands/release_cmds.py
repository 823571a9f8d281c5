"""Release commands: gates, approve, promote, reject, rollback, history, rollout, channels,
audit, policy, card, keys, export, import-bundle."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import click

from relman.commands._shared import AppState, emit_json, pass_state, say, table
from relman.commands.hooks_cmds import hooks_wait_option
from relman.errors import RelmanError
from relman.names import terminal_safe

PHASE_CHOICE = click.Choice(["draft", "candidate", "staging", "production", "retired", "rejected"])


def _print_report(rep: Any) -> None:
    verdict = ("NOTHING CHECKED" if rep.nothing_checked else "PASS") if rep.passed else "FAIL"
    click.echo(f"{rep.model}@{rep.version}: {rep.from_phase} → {rep.to_phase}  [{verdict}: {rep.applied_text()}]  "
               f"(policy revision {rep.policy_revision}; production: {rep.production or '-'}; "
               f"parent: {rep.parent or '-'})")
    if rep.nothing_checked and rep.rules:
        click.echo("  every rule was skipped: nothing about this version was checked (skipped is not passed)")
    if not rep.allowed:
        click.echo(f"  the policy does not allow {rep.from_phase} → {rep.to_phase}")
    if not rep.rules:
        click.echo("  no rules guard this phase")
    for r in rep.ordered_rules():  # failures first, then pending, skipped, passed
        mark = {"pass": "ok  ", "fail": "FAIL", "skipped": "skip", "pending": "wait"}.get(r.status, r.status[:4])
        click.echo(f"  {mark}  {r.rule:<45} {r.reason}")


@click.command()
@click.argument("ref")
@click.option("--to", "to_phase", required=True, type=PHASE_CHOICE, help="Target phase.")
@click.option("--json", "as_json", is_flag=True, help="Print the gate report as JSON.")
@pass_state
def gates(state: AppState, ref: str, to_phase: str, as_json: bool) -> None:
    """Show the gate report for moving REF to a phase (changes nothing); exit 1 if it fails."""
    from relman.app.release import gates as run_gates

    rep = run_gates(state.catalog(), ref, to_phase)
    if as_json:
        emit_json(rep.to_dict())
    else:
        _print_report(rep)
    if not rep.passed:
        raise SystemExit(1)


@click.command()
@click.argument("ref")
@click.option("--to", "to_phase", required=True, type=click.Choice(["candidate", "staging", "production"]),
              help="The phase this approval is for.")
@click.option("--by", help="Who approves (default: RELMAN_USER or the login name).")
@click.option("--comment", default="", help="Why you approve.")
@click.option("--key", "key", help="Sign the approval with this key from 'relman keys' (needed where the policy "
                                   "has require_signed_approvals).")
@click.option("--json", "as_json", is_flag=True, help="Print the approval as JSON.")
@pass_state
def approve(state: AppState, ref: str, to_phase: str, by: str | None, comment: str, key: str | None,
            as_json: bool) -> None:
    """Approve REF for a phase (one approval per person; void once its metrics change)."""
    from relman.app.release import approve as do_approve

    a = do_approve(state.catalog(), ref, to_phase, by=by, comment=comment, key=key)
    if as_json:
        emit_json(a)
    else:
        click.echo(f"{a['by']} approved {a['model']}@{a['version']} for {a['to_phase']}"
                   + (" (renewed: metrics had changed)" if a["renewed"] else ""))


def _report_hooks(state: AppState, result: dict[str, Any], no_wait: bool) -> None:
    """What the hooks this change triggered did (relman/commands/hooks_cmds.py); the change stands."""
    if result.get("hook_jobs") or result.get("hooks_refused") or result.get("hooks_error"):
        from relman.commands.hooks_cmds import report_hooks

        report_hooks(state.catalog(), result, wait=not no_wait)


@contextlib.contextmanager
def _hooks_of_refusal(state: AppState, no_wait: bool) -> Iterator[None]:
    """A refusal (gates, a catalog failing verification) may trigger hooks too: report them,
    then let the one-line error through."""
    try:
        yield
    except RelmanError as e:
        hooks = getattr(e, "hooks", None)
        if hooks:
            _report_hooks(state, hooks, no_wait)
        raise


def _after(result: dict[str, Any]) -> None:
    if result.get("channels"):
        click.echo(f"channels written to {result['channels']}")
    if result.get("channels_error"):
        click.echo(f"warning: channels not written: {result['channels_error']}", err=True)


@click.command()
@click.argument("ref")
@click.option("--to", "to_phase", required=True, type=PHASE_CHOICE, help="Target phase.")
@click.option("--why", default="", help="Reason (required with --override).")
@click.option("--override", is_flag=True, help="Promote although gates fail (recorded as an override).")
@click.option("--by", "who", help="Who promotes (default: RELMAN_USER or the login name).")
@click.option("--json", "as_json", is_flag=True, help="Print the result and gate report as JSON.")
@hooks_wait_option
@pass_state
def promote(state: AppState, ref: str, to_phase: str, why: str, override: bool, who: str | None,
            as_json: bool, no_wait_hooks: bool) -> None:
    """Move REF to a phase if the policy allows it and every gate passes."""
    from relman.app.release import promote as do_promote

    with _hooks_of_refusal(state, no_wait_hooks):
        res = do_promote(state.catalog(), ref, to_phase, why=why, who=who, override=override)
    if as_json:
        emit_json(res)
        _report_hooks(state, res, no_wait_hooks)
        return
    click.echo(f"{res['model']}@{res['version']}: {res['from']} → {res['to']}"
               + ("  (OVERRIDE: gates failed)" if res["override"] else ""))
    rep = res.get("report") or {}
    if rep.get("nothing_checked") and rep.get("rules"):
        click.echo(f"  note: no gate rule applied (0 of {len(rep['rules'])}): nothing about this version was checked "
                   f"on the way to {res['to']}; see 'relman gates {res['model']}@{res['version']} --to {res['to']}'")
    for r in res["replaced"]:
        click.echo(f"  {res['model']}@{r['version']}: production → {r['to']}")
    _after(res)
    _report_hooks(state, res, no_wait_hooks)


@click.command()
@click.argument("ref")
@click.option("--why", default="", help="Reason.")
@click.option("--by", "who", help="Who rejects.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@hooks_wait_option
@pass_state
def reject(state: AppState, ref: str, why: str, who: str | None, as_json: bool, no_wait_hooks: bool) -> None:
    """Reject REF (it leaves the release path)."""
    from relman.app.release import reject as do_reject

    with _hooks_of_refusal(state, no_wait_hooks):
        res = do_reject(state.catalog(), ref, why=why, who=who)
    if as_json:
        emit_json(res)
    else:
        click.echo(f"{res['model']}@{res['version']}: {res['from']} → rejected")
        _after(res)
    _report_hooks(state, res, no_wait_hooks)


@click.command()
@click.argument("model")
@click.option("--why", default="", help="Reason.")
@click.option("--by", "who", help="Who rolls back.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@hooks_wait_option
@pass_state
def rollback(state: AppState, model: str, why: str, who: str | None, as_json: bool, no_wait_hooks: bool) -> None:
    """Put MODEL's previous production version back into production."""
    from relman.app.release import rollback as do_rollback

    with _hooks_of_refusal(state, no_wait_hooks):
        res = do_rollback(state.catalog(), model, why=why, who=who)
    if as_json:
        emit_json(res)
    else:
        click.echo(f"{model}: {res['restored']} back in production; {res['removed']} → {res['removed_to']}")
        _after(res)
    _report_hooks(state, res, no_wait_hooks)


@click.command()
@click.argument("model")
@click.option("--at", "at", help="Show what was in each phase at this date (YYYY-MM-DD, end of day UTC) "
                                 "or ISO date-time.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def history(state: AppState, model: str, at: str | None, as_json: bool) -> None:
    """MODEL's phase changes and canary steps, oldest first."""
    from relman.release.workflow import history as get_history
    from relman.release.workflow import parse_when, phases_at

    cat = state.catalog()
    if at:
        when = parse_when(at)
        phases = phases_at(cat, model, when)
        prod = [ver for ver, ph in phases.items() if ph == "production"]
        if as_json:
            emit_json({"model": model, "at": when.isoformat(), "production": prod[-1] if prod else None,
                       "phases": phases})
            return
        click.echo(f"{model} at {when.isoformat()}: production = {prod[-1] if prod else 'none'}")
        for ver, ph in phases.items():
            click.echo(f"  {ver:<12} {ph}")
        return
    rows = get_history(cat, model)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"{model}: no phase changes yet")
        return
    out = []
    for r in rows:
        change = f"canary {r['share']:g} %" if r["kind"] == "rollout" else f"{r['from_phase']} → {r['to_phase']}"
        flags = "override" if r["override"] else ("rollback" if r["kind"] == "rollback" else "")
        out.append([r["at"][:19].replace("T", " "), r["version"], change, r["who"], flags, r["why"][:60]])
    click.echo(table(out, ["AT", "VERSION", "CHANGE", "WHO", "", "WHY"]))


@click.command()
@click.argument("ref")
@click.option("--share", required=True, type=float, help="Percent of traffic for the canary (0 < share <= 100; "
                                                         "100 = ready for production).")
@click.option("--why", default="", help="Reason.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def rollout(state: AppState, ref: str, share: float, why: str, as_json: bool) -> None:
    """Set the canary traffic share of the staging version REF."""
    from relman.app.release import rollout as do_rollout

    res = do_rollout(state.catalog(), ref, share, why=why)
    if as_json:
        emit_json(res)
        return
    click.echo(f"{res['model']}@{res['version']}: canary share {res['share']:g} %")
    _after(res)


# -- channels ----------------------------------------------------------------------------------
@click.group()
def channels() -> None:
    """The channels manifest (production + canary per model) for serving code."""


@channels.command("write")
@click.argument("folder", required=False, type=click.Path(path_type=str))
@pass_state
def channels_write(state: AppState, folder: str | None) -> None:
    """Write channels.json to FOLDER (default: the configured folder), atomically."""
    from relman.app.release import write_channels

    click.echo(f"wrote {write_channels(state.catalog(), folder)}")


@channels.command("set-dir")
@click.argument("folder", required=False, type=click.Path(path_type=str))
@click.option("--off", is_flag=True, help="Stop writing channels.json automatically.")
@pass_state
def channels_set_dir(state: AppState, folder: str | None, off: bool) -> None:
    """Re-write FOLDER/channels.json after every promote, rollout and rollback."""
    from relman.app.release import set_channels_dir

    if not off and not folder:
        raise click.UsageError("give a FOLDER, or --off")
    path = set_channels_dir(state.catalog(), None if off else folder)
    click.echo("automatic channels writing is off" if path is None else f"channels.json will be kept in {path}")


@channels.command("show")
@pass_state
def channels_show(state: AppState) -> None:
    """Print the channels manifest as JSON (without writing it)."""
    from relman.app.release import channels as build

    emit_json(build(state.catalog()))


# -- audit -------------------------------------------------------------------------------------
@click.group()
def audit() -> None:
    """The audit log (hash chain)."""


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
@pass_state
def audit_verify(state: AppState, as_json: bool) -> None:
    """Check the audit chain (names every edited, deleted or reordered event), its signed
    checkpoint, and every tracked row against the event that committed it; exit 1 on any."""
    from relman.catalog.integrity import check_state
    from relman.release.audit import diagnose

    cat = state.catalog()
    findings = diagnose(cat)
    state_problems, notes = check_state(cat)
    extra = [p for p in state_problems if not p.startswith("audit chain: event")]
    n = cat.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    ok = not findings and not extra
    if as_json:
        emit_json({"ok": ok, "events": n, "problems": [f.to_dict() for f in findings]
                   + [{"kind": "state", "seq": None, "message": p} for p in extra], "notes": notes})
    else:
        for f in findings:
            click.echo(terminal_safe(str(f)))
        for p in extra:
            click.echo(terminal_safe(p))
        for note in notes:
            click.echo(f"note: {terminal_safe(note)}")
        if ok:
            click.echo(f"ok: audit chain of {n} events verifies and every tracked row matches its record")
    if not ok:
        raise SystemExit(1)


@audit.command("accept")
@click.option("--why", required=True, help="What you checked and why the current state is right.")
@click.option("--by", "who", help="Who accepts (default: RELMAN_USER or the login name).")
@click.option("--key", "key", help="Sign with this person's key (default: the catalog's key).")
@pass_state
def audit_accept(state: AppState, why: str, who: str | None, key: str | None) -> None:
    """After 'relman verify' found rows changed outside relman (or a chain cut short) and you
    have checked them: commit the current rows as they are, with the findings and your reason
    on record, and anchor the chain anew. A chain whose events were edited stays reported."""
    from relman.catalog.catalog import current_user
    from relman.catalog.integrity import accept_state

    res = accept_state(state.catalog(), who=who or current_user(), why=why, key_name=key)
    click.echo(f"accepted the current state ({len(res['problems'])} finding(s) recorded, "
               f"{res['superseded_checkpoints']} checkpoint(s) set aside)")


@audit.command("checkpoint")
@click.option("--key", "key", help="Sign with this person's key from 'relman keys' (default: the catalog's key).")
@pass_state
def audit_checkpoint(state: AppState, key: str | None) -> None:
    """Sign the audit chain's head now and keep the checkpoint (in the catalog and as a file)."""
    from relman.catalog.anchor import checkpoint_now

    doc = checkpoint_now(state.catalog(), key_name=key)
    b = doc["body"]
    click.echo(f"checkpoint: event {b['seq']} ({b['hash'][:16]}) signed by {b['signer']} (key {b['key']})")


@audit.command("show")
@click.option("--model", help="Only events about this model.")
@click.option("--version", "version", help="Only events about this version (with --model).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (with hashes).")
@pass_state
def audit_show(state: AppState, model: str | None, version: str | None, as_json: bool) -> None:
    """Show audit events with their hashes."""
    from relman.release.audit import excerpt

    cat = state.catalog()
    if model:
        rows = excerpt(cat, model, version)
    else:
        rows = cat.events()
    if as_json:
        emit_json(rows)
        return
    click.echo(table([[e["seq"], e["at"][:19].replace("T", " "), e["actor"], e["kind"],
                       f"{e['model'] or ''}{'@' + e['version'] if e['version'] else ''}", e["hash"][:16]]
                      for e in rows], ["SEQ", "AT", "ACTOR", "EVENT", "SUBJECT", "HASH"]))


# -- policy ------------------------------------------------------------------------------------
@click.group()
def policy() -> None:
    """Per-model release policy (phases, gates, approvals), versioned in the catalog.

    \b
    A gate rule is one line, parsed (never eval'd); a malformed rule is refused
    with its column and nothing is stored:
      accuracy >= production.accuracy - 0.01   relative to production (or parent.)
      latency_p95_ms <= 1.10 * production      bare production = the same metric
      size_mb <= 200                           absolute
      approvals >= 2                           valid approvals for the phase
      evaluated on dataset sst2-dev            measured on that dataset
    \b
    Interval bounds: metrics stored with a 95 % interval expose <metric>.lower and
    <metric>.upper (accuracy, macro_f1, fidelity, the paired
    <metric>_delta_vs_parent / _vs_production and latency_p50_ratio_vs_...):
      accuracy_delta_vs_production.lower >= -0.01   with 95 % confidence not worse
                                                    than production by > 1 point
      accuracy_delta_vs_production.upper >= -0.01   refuse only when significantly
                                                    worse by more than 1 point
      latency_p50_ratio_vs_production <= 1.10       paired, same job, same inputs
    \b
    Applicability: "RULE when COND [and COND]" (COND may be preceded by not):
      compressed, has_parent, has_production, classifier, causal_lm, embedder;
    a rule that does not apply is skipped, and so is one comparing with a
    production or parent version that does not exist.
    \b
    A metric with no stored value fails as "not evaluated", naming the
    'relman evaluate' command that measures it; a *_vs_production metric
    measured against an earlier production version counts as not evaluated.
    The built-in policy (revision 0): at candidate and staging, quality not
    significantly worse than production (else the parent) by more than one
    point, and fidelity >= 0.99 for compressed children; at staging, the
    paired latency ratio vs production <= 1.10; at production, a 100 % canary.
    """


@policy.command("show")
@click.argument("model")
@pass_state
def policy_show(state: AppState, model: str) -> None:
    """Print MODEL's current policy as JSON (revision 0 = the built-in default)."""
    from relman.app.release import get_policy

    body, revision = get_policy(state.catalog(), model)
    emit_json({"model": model, "revision": revision, "policy": body})


@policy.command("set")
@click.argument("model")
@click.argument("file", type=click.Path(path_type=str))
@pass_state
def policy_set(state: AppState, model: str, file: str) -> None:
    """Store FILE (.json or .toml; missing keys keep their defaults) as MODEL's new policy."""
    from relman.app.release import set_policy

    rev = set_policy(state.catalog(), model, file)
    click.echo(f"policy of {model} is now revision {rev}")


# -- model card --------------------------------------------------------------------------------
@click.command()
@click.argument("ref")
@click.option("--set", "sets", multiple=True, metavar="FIELD=TEXT",
              help="Fill in a field: intended_use, limitations, license, description (repeatable).")
@click.option("-o", "--output", type=click.Path(path_type=str), help="Write README.md here (default: print it).")
@pass_state
def card(state: AppState, ref: str, sets: tuple[str, ...], output: str | None) -> None:
    """Generate REF's model card (Hugging Face README.md with YAML metadata)."""
    from relman.app.bundles import model_card, set_card_fields, write_model_card

    cat = state.catalog()
    if sets:
        fields = {}
        for s in sets:
            key, eq, value = s.partition("=")
            if not eq:
                raise click.BadParameter(f"'{s}' is not FIELD=TEXT", param_hint="--set")
            fields[key.strip()] = value
        set_card_fields(cat, ref, fields)
    if output:
        click.echo(f"wrote {write_model_card(cat, ref, output)}")
    elif not sets:
        click.echo(model_card(cat, ref))
    else:
        click.echo(f"updated {', '.join(sorted(fields))}")


# -- keys --------------------------------------------------------------------------------------
@click.group()
def keys() -> None:
    """Signing keys (kept outside the catalog; RELMAN_KEYS_DIR overrides): each NAME is an Ed25519
    pair for relman's own signatures plus its ECDSA P-256 twin for OpenSSF model signatures."""


@keys.command("create")
@click.argument("name")
def keys_create(name: str) -> None:
    """Create key pair NAME and its P-256 twin (private keys mode 0600); both are trusted here."""
    from relman.app.bundles import create_key

    k = create_key(name)
    click.echo(f"created key {k['name']} (id {k['id']}); give {k['public_key']} to whoever imports your bundles "
               f"and {k['openssf_public_key']} to whoever checks them with 'model_signing verify key'")


@keys.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def keys_ls(as_json: bool) -> None:
    """List own keys and trusted public keys."""
    from relman.app.bundles import list_keys
    from relman.release.keys import keys_dir

    ks = list_keys()
    if as_json:
        emit_json(ks)
    elif ks:
        click.echo(table([[k["kind"], k["name"], k["id"], k["path"]] for k in ks], ["KIND", "NAME", "ID", "PATH"]))
    else:
        click.echo(f"no keys in {keys_dir()}: relman keys create NAME")


@keys.command("trust")
@click.argument("pubfile", type=click.Path(path_type=str))
def keys_trust(pubfile: str) -> None:
    """Trust the public key in PUBFILE: a relman key (.pub, for bundle imports) or a P-256 PEM
    (.p256.pub, for OpenSSF model signatures)."""
    from relman.app.bundles import trust_key

    k = trust_key(pubfile)
    click.echo(f"trusting {k['kind']} key {k['name']} (id {k['id']})")


@keys.command("verify")
@click.argument("folder", type=click.Path(path_type=str))
def keys_verify(folder: str) -> None:
    """Check FOLDER's OpenSSF model.sig (an unpacked bundle or an exported folder) with the
    model-signing library and the P-256 keys trusted here; the same check as `model_signing
    verify key FOLDER --signature FOLDER/model.sig --public_key KEY`."""
    from pathlib import Path

    from relman.release.openssf import verify_trusted

    pem = verify_trusted(Path(folder))
    click.echo(terminal_safe(f"{folder}: every file matches model.sig, signed by trusted key {pem.name}"))


# -- export / import ---------------------------------------------------------------------------
@click.command("export")
@click.argument("ref")
@click.argument("folder", required=False, type=click.Path(path_type=str))
@click.option("-o", "--output", type=click.Path(path_type=str), help="Bundle file to write (signed .relman tar).")
@click.option("--format", "fmt", type=click.Choice(["bundle", "hf", "onnx", "gguf"]), default="bundle",
              show_default=True, help="bundle: signed archive (-o FILE); hf/onnx/gguf: a plain folder FOLDER "
                                      "(gguf: model.gguf + README.md + an Ollama Modelfile).")
@click.option("--gguf-type", type=click.Choice(["F16", "Q8_0", "Q4_0", "Q4_K_M"], case_sensitive=False),
              default="Q4_K_M", show_default=True,
              help="Tensor types when --format gguf converts a Hugging Face causal LM (a gguf version is "
                   "written as it is).")
@click.option("--key", help="Signing key name (a bundle: default your only key; a folder: signed with an OpenSSF "
              "model.sig only when --key is given).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def export(state: AppState, ref: str, folder: str | None, output: str | None, fmt: str, gguf_type: str,
           key: str | None, as_json: bool) -> None:
    """Export REF as a signed bundle (-o FILE) or as a plain hf/onnx/gguf FOLDER."""
    from relman.app.bundles import export_bundle, export_folder

    cat = state.catalog()
    if fmt == "bundle":
        if not output or folder:
            raise click.UsageError("a bundle needs -o FILE (use --format hf|onnx|gguf for a folder)")
        res = export_bundle(cat, ref, output, key=key)
        if as_json:
            emit_json(res)
        else:
            say(f"wrote {res['path']} ({res['files']} files, {res['bytes']:,} bytes), signed by "
                       f"{res['key_name']} ({res['key_id']}); OpenSSF model.sig inside, public key "
                       f"{res['openssf_public_key']}")
        return
    dest = folder or output
    if not dest:
        raise click.UsageError(f"--format {fmt} needs a FOLDER")
    path = export_folder(cat, ref, dest, fmt, gguf_type=gguf_type.upper(), key=key)
    signed = (path / "model.sig").is_file()
    if as_json:
        emit_json({"path": str(path), "format": fmt, "openssf_signature": str(path / "model.sig") if signed else None})
    else:
        say(f"wrote {fmt} folder {path}" + (" with an OpenSSF signature (model.sig)" if signed else
                                            " (unsigned: add --key NAME for an OpenSSF model.sig)"))


@click.command("import-bundle")
@click.argument("file", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def import_bundle_cmd(state: AppState, file: str, as_json: bool) -> None:
    """Verify a signed bundle (trusted key, checksums, safe paths) and merge it into the catalog."""
    from relman.app.bundles import import_bundle

    res = import_bundle(state.catalog(), file)
    if as_json:
        emit_json(res)
        return
    say(f"imported {res['model']}@{res['version']} ({res['files']} files, {res['metrics']} metrics), signed by "
               f"{res['signed_by']['name']} ({res['signed_by']['id']})")
    if res["missing_parents"]:
        say(f"  parents not in this catalog (lineage kept in meta): {', '.join(res['missing_parents'])}")
    for note in res["signed_by"].get("notes", []):
        click.echo(terminal_safe(f"  note: {note}"))


COMMANDS: list[click.Command] = [gates, approve, promote, reject, rollback, history, rollout, channels, audit, policy,
                                 card, keys, export, import_bundle_cmd]
