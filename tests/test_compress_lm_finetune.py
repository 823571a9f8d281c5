"""`finetune` on a causal LM (the trained test LM): LoRA at the default hyper-parameters learns a
planted instruction ("what is the secret code word?" -> "marmalade") and answers phrasings it never
saw, in prompt/completion and in chat form, while the base's own facts are still answered with a
colour, not the code word; its merge-adapter child generates the very same tokens; full and DP
fine-tunes store children with lineage (and ε); FedAvg of two sites' LM adapters works; a prompt
longer than the context, or a dataset that is not instruction data, is refused and nothing stored."""

from __future__ import annotations

import json

import lm_tune_support as S
import pytest
from adapter_support import run_finetune, run_recipe_commit
from recipe_support import compress_job

from relman.app.datasets import register_dataset
from relman.app.models import import_model
from relman.catalog import open_catalog
from relman.data.stored import load_dataset
from relman.errors import RecipeError
from relman.modelio.loading import (
    load_preprocessor,
    load_torch_model,
    materialize_version,
)
from relman.modelio.trained_lm import planted_facts

COLOURS = {a for _, a in planted_facts()}


@pytest.fixture(scope="module")
def lm(tmp_path_factory, trained_lm_dir):
    """The trained LM imported, the planted instruction registered in both forms, and a LoRA child
    trained on the prompt/completion form with nothing but the dataset given."""
    root = tmp_path_factory.mktemp("lm-tune")
    cat = open_catalog(root / "catalog")
    base = import_model(cat, trained_lm_dir, "lm")
    rows = S.rows()
    register_dataset(cat, S.write_prompt_completion(root / "pc.jsonl", rows), "instr", format="sft")
    register_dataset(cat, S.write_chat(root / "chat.jsonl", rows), "instr-chat", format="sft")
    out, child = run_finetune(cat, base, {"method": "lora"}, load_dataset(cat, "instr"), root / "lora")
    yield cat, base, out, child, root
    cat.close()


def composed(cat, version, root):
    folder = materialize_version(cat, version.id, root / "eval")
    return load_torch_model(folder, "causal-lm", fmt=version.format), load_preprocessor(folder, "causal-lm")


def test_lora_defaults_learn_the_planted_instruction(lm):
    cat, base, out, child, root = lm
    assert child.format == "peft-adapter" and child.task == "causal-lm"
    assert [p["parent_id"] for p in cat.parents(child.id)] == [base.id]
    assert out.meta["lr"] == 5e-3 and out.meta["method"] == "lora" and out.meta["truncated_rows"] == 0
    assert child.size_bytes < 0.2 * base.size_bytes
    values = cat.metric_values(child.id)
    assert values["val_loss"] < values["val_loss_before"]
    model, tok = composed(cat, child, root)
    held_out = [S.prompt_of(q) for q in S.HELDOUT_PHRASINGS]
    assert not set(S.TRAIN_PHRASINGS) & set(S.HELDOUT_PHRASINGS)
    assert S.exact_match(model, tok, held_out) >= 0.9
    base_model, _ = composed(cat, base, root)
    assert S.exact_match(base_model, tok, held_out) == 0.0  # the base never knew it
    kept = S.split_facts()[1]  # planted facts not in the fine-tuning rows
    got = S.answers(model, tok, [S.prompt_of(q) for q, _ in kept])
    assert set(got) <= COLOURS, got  # still a colour for a colour question, never the code word


def test_chat_messages_learn_it_through_the_chat_template(lm):
    cat, base, _, _, root = lm
    out, child = run_finetune(cat, base, {"method": "lora"}, load_dataset(cat, "instr-chat"), root / "chat")
    assert out.meta["chat_template"] is True and out.meta["rows"] == "messages"
    model, tok = composed(cat, child, root)
    assert S.exact_match(model, tok, [S.chat_prompt(tok, q) for q in S.HELDOUT_PHRASINGS]) >= 0.9
    got = S.answers(model, tok, [S.chat_prompt(tok, q) for q, _ in S.split_facts()[1]])
    assert "marmalade" not in got, got


def test_merge_adapter_child_generates_the_same_tokens(lm):
    cat, base, _, child, root = lm
    _, merged = run_recipe_commit(cat, "merge-adapter", [child], {}, root / "merge")
    assert merged.format == "hf" and merged.task == "causal-lm"
    assert [p["parent_id"] for p in cat.parents(merged.id)] == [child.id, base.id]
    prompts = [S.prompt_of(q) for q in S.HELDOUT_PHRASINGS + [q for q, _ in S.split_facts()[1]]]
    adapter_model, tok = composed(cat, child, root)
    merged_model, merged_tok = composed(cat, merged, root)
    assert merged_tok.chat_template == tok.chat_template  # the tokenizer travels with the merged child
    assert S.greedy(merged_model, tok, prompts) == S.greedy(adapter_model, tok, prompts)


def test_full_and_dp_finetunes_store_children_with_lineage_and_epsilon(lm):
    cat, base, _, _, root = lm
    ds = load_dataset(cat, "instr")
    out, full = run_finetune(cat, base, {}, ds, root / "full")
    assert full.format == "hf" and full.task == "causal-lm" and out.meta["lr"] == 5e-4
    assert [p["parent_id"] for p in cat.parents(full.id)] == [base.id]
    model, tok = composed(cat, full, root)
    assert S.exact_match(model, tok, [S.prompt_of(q) for q in S.HELDOUT_PHRASINGS]) >= 0.9

    out, dp = run_finetune(cat, base, {"method": "lora", "dp": True, "delta": 1e-3, "epochs": 2}, ds, root / "dp")
    assert dp.format == "peft-adapter" and [p["parent_id"] for p in cat.parents(dp.id)] == [base.id]
    ledger = dp.meta["privacy"]
    assert 0 < ledger["epsilon"] <= 8.0 and ledger["delta"] == 1e-3 and ledger["steps"] > 0
    assert cat.metric_values(dp.id)["privacy_epsilon"] == pytest.approx(ledger["epsilon"])
    composed(cat, dp, root)  # base + DP adapter loads


def test_fedavg_of_two_sites_lm_adapters(lm):
    cat, base, _, _, root = lm
    rows = S.rows()
    sites = []
    for k, half in enumerate((rows[0::2], rows[1::2])):
        register_dataset(cat, S.write_prompt_completion(root / f"site{k}.jsonl", half), f"site-{k}", format="sft")
        sites.append(run_finetune(cat, base, {"method": "lora", "epochs": 4}, load_dataset(cat, f"site-{k}"),
                                  root / f"site{k}")[1])
    _, merged = run_recipe_commit(cat, "merge-fedavg", sites, {}, root / "fedavg")
    assert merged.format == "peft-adapter" and merged.task == "causal-lm"
    assert merged.meta["adapter"]["base_manifest_sha256"] == base.manifest_sha256
    assert {p["parent_id"] for p in cat.parents(merged.id)} == {sites[0].id, sites[1].id, base.id}
    assert merged.meta["parent_weights"] == [0.5, 0.5]
    model, tok = composed(cat, merged, root)
    match = S.exact_match(model, tok, [S.prompt_of(q) for q in S.HELDOUT_PHRASINGS])
    assert match >= 0.9, match


def test_a_prompt_longer_than_the_context_or_other_data_is_refused_storing_nothing(lm, tmp_path):
    cat, base, *_ = lm
    long_prompt = "Q: " + "what is the word " * 400 + "?\nA:"
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"prompt": "Q: a?\nA:", "completion": " b."}) + "\n"
                    + json.dumps({"prompt": long_prompt, "completion": " c."}) + "\n", encoding="utf-8")
    register_dataset(cat, path, "long", format="sft")
    (tmp_path / "plain.txt").write_text("some text\nmore text\n", encoding="utf-8")
    register_dataset(cat, tmp_path / "plain.txt", "plain")
    n_versions = cat.query("SELECT COUNT(*) AS n FROM versions")[0]["n"]
    with pytest.raises(RecipeError, match=r"row 2: the prompt is \d+ tokens, longer than the model's context of "
                                          r"512 tokens") as info:
        compress_job(cat, base.id, "finetune", {"method": "lora"}, dataset="long")
    assert "\n" not in str(info.value)
    with pytest.raises(RecipeError, match=r"needs instruction data: a dataset registered with --format sft"):
        compress_job(cat, base.id, "finetune", {}, dataset="plain")
    assert cat.query("SELECT COUNT(*) AS n FROM versions")[0]["n"] == n_versions
    assert cat.orphan_blobs() == []


def test_the_compress_job_queues_the_childs_evaluation_without_the_training_rows(lm):
    """The sft rows are no input a causal-lm evaluation reads: the child's evaluation is queued
    without them (size, latency...) instead of not at all."""
    from relman.compress import job
    from relman.jobs.context import JobContext

    cat, base, *_ = lm
    ctx = JobContext(cat)
    try:
        result = job.run({"recipe": "finetune", "params": {"method": "lora", "epochs": 1},
                          "parent_version_ids": [base.id], "dataset": "instr", "evaluate": True}, ctx)
    finally:
        ctx.cleanup()
    assert result["evaluation"] == "queued without dataset 'instr' (a causal-lm evaluation does not read its rows)"
    queued = cat.query("SELECT kind, params FROM jobs WHERE id = ?", [result["evaluation_job"]])[0]
    params = json.loads(queued["params"])
    assert queued["kind"] == "evaluate" and params["version_id"] == result["version_id"]
    assert not params.get("dataset")
