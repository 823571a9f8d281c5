"""Language-model evaluation items: OpenCompass mcq JSONL, question/answer JSONL and
lm-evaluation-harness task YAML load unchanged; malformed files are refused with one line that
names the line or field, and nothing is stored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from relman.app.datasets import register_dataset
from relman.data import load_dataset
from relman.errors import DatasetError
from relman.modelio.trained_lm import planted_facts

DATA = Path(__file__).parent / "data" / "lm_eval"
BAD = DATA / "malformed"


def _count(catalog) -> tuple[int, int]:
    return (catalog.conn.execute("SELECT COUNT(*) FROM datasets").fetchone()[0],
            catalog.conn.execute("SELECT COUNT(*) FROM dataset_files").fetchone()[0])


def test_opencompass_mcq_and_lm_eval_yaml_give_the_same_items(catalog) -> None:
    register_dataset(catalog, DATA / "colours_mcq.jsonl", "oc", format="mcq")
    register_dataset(catalog, DATA / "colours.yaml", "harness")  # format guessed from .yaml
    oc, harness = load_dataset(catalog, "oc"), load_dataset(catalog, "harness")
    assert oc.kind == harness.kind == "mcq" and len(oc) == len(harness) == len(planted_facts())
    for a, b, (q, answer) in zip(oc.items, harness.items, planted_facts()):
        assert a["context"] == b["context"] == f"Q: {q}\nA:"
        assert a["choices"] == b["choices"] and a["gold"] == b["gold"]
        assert a["choices"][a["gold"]] == answer  # the key points at the planted colour
    # the YAML and the data file it names are stored together, by content
    files = catalog.query("SELECT path FROM dataset_files WHERE dataset_id = ?", [harness.id])
    assert sorted(f["path"] for f in files) == ["colours.jsonl", "colours.yaml"]
    assert harness.meta["lm_eval_task"] == "planted_colours"


def test_generate_until_task_and_qa_jsonl(catalog) -> None:
    register_dataset(catalog, DATA / "colours_qa.jsonl", "qa", format="qa")
    register_dataset(catalog, DATA / "colours_gen.yaml", "qa-harness")
    qa, gen = load_dataset(catalog, "qa"), load_dataset(catalog, "qa-harness")
    assert qa.kind == gen.kind == "qa"
    assert [i["prompt"] for i in qa.items] == [i["prompt"] for i in gen.items]
    assert [i["answers"] for i in qa.items] == [[a] for _, a in planted_facts()] == [i["answers"] for i in gen.items]


@pytest.mark.parametrize("path, fmt, message", [
    (BAD / "mcq_missing_answer.jsonl", "mcq", "mcq_missing_answer.jsonl line 2: no 'answer' field"),
    (BAD / "mcq_bad_letter.jsonl", "mcq", "mcq_bad_letter.jsonl line 3: answer 'E' names no option (options: A, B, C, D)"),
    (BAD / "qa_missing_answer.jsonl", "qa", "qa_missing_answer.jsonl line 2: no 'answer' field"),
    (BAD / "missing_field.yaml", None, "colours.jsonl line 1: doc_to_text references a missing field ('topic' is undefined)"),
    (BAD / "function.yaml", None, "function.yaml: the tag !function at line 8 needs Python code"),
    (BAD / "hub.yaml", None, "dataset_path must be 'json' with local data_files"),
])
def test_malformed_input_is_one_line_and_stores_nothing(catalog, path: Path, fmt: str | None, message: str) -> None:
    before = _count(catalog)
    with pytest.raises(DatasetError) as e:
        register_dataset(catalog, path, "bad", format=fmt)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert _count(catalog) == before


def test_yaml_data_file_must_stay_in_its_folder(catalog, tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    shutil.copy(DATA / "colours.jsonl", tmp_path / "colours.jsonl")
    text = (DATA / "colours.yaml").read_text().replace("test: colours.jsonl", "test: ../colours.jsonl")
    (tmp_path / "t" / "task.yaml").write_text(text)
    with pytest.raises(DatasetError, match="must be a plain path inside the YAML's folder"):
        register_dataset(catalog, tmp_path / "t" / "task.yaml", "escape")


def test_a_target_outside_the_choices_is_refused(catalog, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (DATA / "colours.jsonl").read_text().splitlines()[:2]]
    rows[1]["label"] = 7
    (tmp_path / "colours.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy(DATA / "colours.yaml", tmp_path / "colours.yaml")
    with pytest.raises(DatasetError, match=r"colours.jsonl line 2: target 7 names no choice \(there are 4\)"):
        register_dataset(catalog, tmp_path / "colours.yaml", "seven")
