"""The `sft` dataset format (instruction rows for fine-tuning language models): prompt/completion
and chat rows are read; a row without a completion, a turn with an unknown role, a conversation
with no assistant turn are refused in one line naming the row, and nothing is stored."""

from __future__ import annotations

import json

import pytest

from relman.app.datasets import register_dataset
from relman.data.stored import load_dataset
from relman.errors import DatasetError


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(*turns):
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


def test_prompt_completion_and_chat_rows_are_read_back(catalog, tmp_path):
    pc = write(tmp_path / "pc.jsonl", [{"prompt": f"Q: {i}?\nA:", "completion": f" {i * 2}.", "split": s}
                                       for i, s in zip(range(6), ["train"] * 4 + ["validation"] * 2)])
    register_dataset(catalog, pc, "pc", format="sft", split_col="split")
    ds = load_dataset(catalog, "pc")
    assert ds.kind == "sft" and ds.texts[3] == "Q: 3?\nA:" and ds.completions[3] == " 6." and ds.messages is None
    val = ds.subset("validation")
    assert val.texts == ["Q: 4?\nA:", "Q: 5?\nA:"] and val.completions == [" 8.", " 10."]

    ch = write(tmp_path / "chat.jsonl", [chat(("system", "be brief"), ("user", "hi"), ("assistant", "hello")),
                                         chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))])
    register_dataset(catalog, ch, "chat", format="sft")
    ds = load_dataset(catalog, "chat")
    assert ds.completions is None and [len(m) for m in ds.messages] == [3, 4]
    assert ds.messages[1][3] == {"role": "assistant", "content": "d"}
    assert ds.take([1]).messages == [ds.messages[1]]
    assert catalog.query("SELECT kind FROM datasets WHERE name = 'chat'")[0]["kind"] == "sft"


@pytest.mark.parametrize("rows,message", [
    ([{"prompt": "Q: a?\nA:", "completion": " b."}, {"prompt": "Q: c?\nA:"}],
     r"row 2 \(line 2\): no 'completion' \(a prompt/completion row needs both"),
    ([{"prompt": "Q: a?\nA:", "completion": "  "}], r"row 1 \(line 1\): 'completion' is empty"),
    ([{"prompt": 3, "completion": "x"}], r"'prompt' must be a string, got int"),
    ([chat(("user", "a"), ("assistant", "b")), chat(("user", "a"), ("wizard", "b"))],
     r"row 2 \(line 2\): turn 2 has role 'wizard'; allowed roles are system, user, assistant"),
    ([chat(("system", "s"), ("user", "a"))], r"row 1 \(line 1\): no assistant turn with content"),
    ([chat(("user", "a"), ("assistant", "b")), {"prompt": "p", "completion": "c"}],
     r"row 2 \(line 2\): no 'messages' \(the first row is a chat row"),
    ([{"messages": [{"role": "user"}]}], r"turn 1 must be an object with string 'role' and 'content'"),
])
def test_bad_rows_are_refused_in_one_line_and_nothing_is_stored(catalog, tmp_path, rows, message):
    path = write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DatasetError, match=message) as info:
        register_dataset(catalog, path, "bad", format="sft")
    assert "\n" not in str(info.value)
    assert catalog.query("SELECT COUNT(*) AS n FROM datasets")[0]["n"] == 0
    assert catalog.orphan_blobs() == []


def test_the_cli_registers_an_sft_file_and_refuses_a_bad_one(run_cli, tmp_path):
    good = write(tmp_path / "good.jsonl", [{"prompt": "Q: a?\nA:", "completion": " b."}] * 3)
    result = run_cli("dataset", "add", str(good), "--name", "instr", "--format", "sft")
    assert result.exit_code == 0, result.output
    assert "sft, 3 rows" in result.output
    bad = write(tmp_path / "bad.jsonl", [chat(("user", "a"))])
    result = run_cli("dataset", "add", str(bad), "--name", "bad", "--format", "sft")
    assert result.exit_code != 0 and "no assistant turn" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
