"""Secure aggregation for file-based FedAvg of LoRA adapters (relman.compress.adapt.secagg):
three sites with real X25519 keys mask real LoRA adapters trained on different planted data
(different example counts); the masked merge equals the plain merge-fedavg, a single masked
file is uncorrelated with its site's true update, a round with a dropped site and a key list
with a missing peer key are refused with one line and nothing stored."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from relman.app.models import import_model
from relman.catalog import open_catalog
from relman.compress.adapt import secagg
from relman.errors import RecipeError
from relman.modelio import peft_adapter, tiny

from adapter_support import lay_out, planted, run_finetune, run_recipe_commit

pytestmark = pytest.mark.heavy
QUICK_LORA = {"method": "lora", "r": 2, "alpha": 4, "target_modules": "query,value", "epochs": 1, "lr": 1e-2,
              "batch_size": 16}
SITES = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    """A base, three sites' adapters (40 / 60 / 100 rows), three site keys and their key list."""
    root = tmp_path_factory.mktemp("secagg")
    old = os.environ.get("RELMAN_KEYS_DIR")
    os.environ["RELMAN_KEYS_DIR"] = str(root / "keys")
    cat = open_catalog(root / "catalog")
    base = import_model(cat, tiny.tiny_bert_classifier(root / "bert"), "bert")
    adapters = [run_finetune(cat, base, {**QUICK_LORA, "seed": k}, planted(n, seed=k), root / f"site{k}")[1]
                for k, n in enumerate((40, 60, 100))]
    lines = [secagg.create_site_key(name).line() for name in SITES]
    key_list = root / "keys.txt"
    key_list.write_text("# round keys\n" + "".join(lines), encoding="utf-8")
    yield cat, base, adapters, key_list, root
    cat.close()
    if old is None:
        os.environ.pop("RELMAN_KEYS_DIR", None)
    else:
        os.environ["RELMAN_KEYS_DIR"] = old


def mask_round(fed, round_id: str) -> list:
    cat, _, adapters, key_list, root = fed
    paths = []
    for name, ad in zip(SITES, adapters):
        out = root / round_id / f"{name}{secagg.MASKED_SUFFIX}"
        secagg.mask_version(cat, ad.ref, key_name=name, key_list=key_list, round_id=round_id, out=out)
        paths.append(out)
    return paths


def composed(folder) -> dict[str, torch.Tensor]:
    """Each adapted layer's B A and every other tensor of a stored adapter folder."""
    from safetensors.torch import load_file as load_pt

    from relman.compress.adapt.merge import lora_pairs

    t = load_pt(str(folder / peft_adapter.WEIGHTS))
    out = {}
    for a, b in lora_pairs(list(t)):
        out[a] = t[b].double() @ t[a].double()
        t.pop(a), t.pop(b)
    return {**out, **{k: v.double() for k, v in t.items()}}


def test_masked_merge_equals_the_plain_weighted_merge(fed):
    cat, base, adapters, _, root = fed
    paths = mask_round(fed, "r-equal")
    out, child = run_recipe_commit(cat, "merge-fedavg", [base], {"masked": [str(p) for p in paths]}, root / "m")
    plain, plain_child = run_recipe_commit(cat, "merge-fedavg", adapters, {}, root / "plain")
    assert plain.meta["weights_source"] == "train_samples"  # the plain merge weighted by 40 / 60 / 100 as well
    got, want = composed(out.folder), composed(plain.folder)
    assert set(got) == set(want)
    for name in want:
        scale = float(want[name].abs().max()) or 1.0
        assert float((got[name] - want[name]).abs().max()) / scale < 1e-5, name
    # the weights mattered: an equal-weight merge is measurably different
    equal, _ = run_recipe_commit(cat, "merge-fedavg", adapters, {"weights": ["1", "1", "1"]}, root / "eq")
    head = next(n for n in want if "lora" not in n)
    assert float((composed(equal.folder)[head] - want[head]).abs().max()) > 1e-4
    counts = [cat.get_version(a.id).meta["train_samples"] for a in adapters]  # the training splits
    assert len(set(counts)) == 3 and child.format == "peft-adapter"
    assert out.meta["train_samples"] == pytest.approx(sum(counts))
    assert out.meta["secure_aggregation"]["drop_out_rule"] == "round refused"
    assert out.meta["parent_weights"] is None  # no site's weight is known to the merger
    assert [p["parent_id"] for p in cat.parents(child.id)] == [base.id]
    # the stored child loads as an adapter of the base and predicts like the plain merge
    m1 = peft_adapter.load_adapter(lay_out(cat, child, root / "l1").folder, "text-classification")
    m2 = peft_adapter.load_adapter(lay_out(cat, plain_child, root / "l2").folder, "text-classification")
    ids = torch.randint(0, 100, (8, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (m1(input_ids=ids).logits - m2(input_ids=ids).logits).abs().max()
    assert float(diff) < 1e-4


def test_a_single_masked_file_is_uncorrelated_with_its_true_update(fed):
    cat, _, adapters, _, root = fed
    paths = mask_round(fed, "r-corr")
    counts = [cat.get_version(a.id).meta["train_samples"] for a in adapters]
    _, _, update, _ = secagg.adapter_update(lay_out(cat, adapters[0], root / "corr").folder)
    masked = load_file(str(paths[0]))
    true = np.concatenate([update[n].ravel() * counts[0] for n in sorted(update)])
    seen = np.concatenate([secagg.decode(masked[n]).ravel() for n in sorted(update)])
    assert true.size > 1000 and np.std(true) > 0
    assert abs(float(np.corrcoef(true, seen)[0, 1])) < 0.05
    # the same statistic on the full sum is ~1: the test can see a correlation when there is one
    _, sums, total = secagg.unmask_sum(paths)
    others = [secagg.adapter_update(lay_out(cat, a, root / f"c{k}").folder)[2] for k, a in enumerate(adapters)]
    full = np.concatenate([sum(o[n] * c for o, c in zip(others, counts)).ravel() for n in sorted(update)])
    summed = np.concatenate([sums[n].ravel() for n in sorted(update)])
    assert float(np.corrcoef(full, summed)[0, 1]) > 0.999 and total == pytest.approx(sum(counts))


def test_a_round_with_a_dropped_site_is_refused_and_nothing_is_stored(fed):
    cat, base, _, _, root = fed
    paths = mask_round(fed, "r-drop")
    before = len(cat.versions(include_deleted=True))
    with pytest.raises(RecipeError, match=r"missing the masked update of gamma .*dropped site is refused") as e:
        run_recipe_commit(cat, "merge-fedavg", [base], {"masked": [str(p) for p in paths[:2]]}, root / "d")
    assert "\n" not in str(e.value)
    assert len(cat.versions(include_deleted=True)) == before
    assert [p.name for p in (root / "d").iterdir()] == ["parents"]  # the laid-out base only: no output folder
    # files of two rounds do not mix either
    other = mask_round(fed, "r-drop2")
    with pytest.raises(RecipeError, match="not from the same round"):
        secagg.check_round([paths[0], paths[1], other[2]])


def test_a_missing_peer_key_is_refused_with_nothing_written(fed):
    cat, _, adapters, key_list, root = fed
    broken = root / "broken-keys.txt"
    broken.write_text(key_list.read_text() + "delta\n", encoding="utf-8")
    out = root / "miss" / "alpha.secagg.safetensors"
    with pytest.raises(RecipeError, match="site 'delta' has no public key") as e:
        secagg.mask_version(cat, adapters[0].ref, key_name="alpha", key_list=broken, round_id="r-miss", out=out)
    assert "\n" not in str(e.value) and not out.exists() and not out.parent.exists()
    # the round id was not burnt: with the fixed list the same round masks
    secagg.mask_version(cat, adapters[0].ref, key_name="alpha", key_list=key_list, round_id="r-miss", out=out)
    assert out.is_file()
    # but a second masking for the same round is refused (masks never repeat)
    with pytest.raises(RecipeError, match="already masked an update for round 'r-miss'"):
        secagg.mask_version(cat, adapters[1].ref, key_name="alpha", key_list=key_list, round_id="r-miss",
                            out=root / "miss" / "again.secagg.safetensors")
    # a site whose own key is not in the list
    secagg.create_site_key("outsider")
    with pytest.raises(RecipeError, match="'outsider' .* is not in the key list"):
        secagg.mask_version(cat, adapters[0].ref, key_name="outsider", key_list=key_list, round_id="r-out",
                            out=root / "miss" / "o.secagg.safetensors")


def test_cli_masks_and_refuses_an_incomplete_round_before_queueing(fed):
    from click.testing import CliRunner

    from relman.cli import cli

    cat, base, adapters, key_list, root = fed
    run = CliRunner()
    r = run.invoke(cli, ["--catalog", str(cat.root), "federated", "key", "epsilon-site"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("relman-x25519 ")
    outs = []
    for name, ad in zip(SITES[:2], adapters[:2]):
        out = root / "cli" / f"{name}.secagg.safetensors"
        r = run.invoke(cli, ["--catalog", str(cat.root), "federated", "mask", ad.ref, "--keys", str(key_list),
                             "--key", name, "--round", "r-cli", "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert "weight train_samples" in r.output and out.is_file()
        outs.append(str(out))
    jobs_before = cat.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"]
    r = run.invoke(cli, ["--catalog", str(cat.root), "federated", "merge", base.ref, *outs])
    assert r.exit_code != 0 and "missing the masked update of gamma" in r.output
    assert cat.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"] == jobs_before


def test_cli_merge_of_a_complete_round_runs_as_a_compress_job(fed):
    from click.testing import CliRunner

    from relman.cli import cli
    from relman.jobs import queue
    from relman.jobs.queue import get_job
    from relman.jobs.runner import Runner
    from relman.jobs.testing import drive_until

    cat, base, _, _, _ = fed
    paths = mask_round(fed, "r-job")
    r = CliRunner().invoke(cli, ["--catalog", str(cat.root), "federated", "merge", base.ref, *map(str, paths),
                                 "--no-evaluate", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    job_id = int(r.output.split("queued compress job ")[1].split()[0])
    runner = Runner(cat.root, cpu_slots=1)
    try:
        drive_until(runner, lambda: get_job(cat, job_id)["status"] in queue.FINISHED, 180, "the masked merge job")
    finally:
        for w in list(runner.workers.values()):
            w.proc.wait(timeout=30)
        runner.close()
    job = get_job(cat, job_id)
    assert job["status"] == "succeeded", job["error"]
    child = cat.get_version(job["result_version_id"])
    assert child.format == "peft-adapter" and child.recipe["name"] == "merge-fedavg"
    assert child.meta["secure_aggregation"]["round"] == "r-job"
    assert [p["parent_id"] for p in cat.parents(child.id)] == [base.id]
