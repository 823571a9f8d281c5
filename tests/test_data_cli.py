"""The `relman dataset` commands, run through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from import_probe import heavy_loaded_by



def test_add_ls_show(run_cli, tmp_path: Path):
    from relman.data.demo import sentiment_csv

    p = sentiment_csv(tmp_path / "reviews.csv", n=40, seed=1)
    r = run_cli("dataset", "add", str(p), "--name", "reviews", "--group-col", "group", "--labels",
                "negative,positive", "--val-fraction", "0.25", "--seed", "3")
    assert r.exit_code == 0, r.output
    assert "registered dataset reviews: csv, text, 40 rows, 2 labels" in r.output
    assert "validation 10" in r.output

    r = run_cli("dataset", "ls", "--json")
    rows = json.loads(r.output)
    assert [d["name"] for d in rows] == ["reviews"]
    assert rows[0]["columns"]["group_col"] == "group" and rows[0]["columns"]["seed"] == 3

    r = run_cli("dataset", "ls")
    assert "reviews" in r.output and "csv" in r.output

    r = run_cli("dataset", "show", "reviews")
    assert r.exit_code == 0, r.output
    assert "negative, positive" in r.output and "group-a" in r.output and "reviews.csv" in r.output
    r = run_cli("dataset", "show", "reviews", "--json")
    d = json.loads(r.output)
    assert d["n_rows"] == 40 and d["files"][0]["path"] == "reviews.csv"


def test_add_refused_prints_one_line_and_stores_nothing(run_cli, tmp_path: Path, catalog_path: Path):
    p = tmp_path / "bad.csv"
    p.write_text("text,label\ngood,positive\nbad,\n", encoding="utf-8")
    r = run_cli("dataset", "add", str(p), "--name", "bad")
    assert r.exit_code == 1
    assert r.output.strip() == "error: bad.csv row 2 (line 3): label column 'label' is empty"
    from relman.catalog import open_catalog

    with open_catalog(catalog_path) as cat:
        assert cat.query("SELECT * FROM datasets") == [] and cat.orphan_blobs() == []
    r = run_cli("dataset", "show", "bad")
    assert r.exit_code == 1 and "unknown dataset 'bad'" in r.output


def test_add_npz_and_unlabelled_and_images(run_cli, tmp_path: Path):
    from relman.data.demo import write_digits_folder, write_digits_npz

    npz = write_digits_npz(tmp_path / "d.npz", n=30)
    r = run_cli("dataset", "add", str(npz), "--name", "d", "--x-key", "images", "--y-key", "labels",
                "--test-fraction", "0.2", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["kind"] == "image" and d["meta"]["split_counts"] == {"train": 24, "test": 6}
    folder = write_digits_folder(tmp_path / "folder", n=20)
    r = run_cli("dataset", "add", str(folder), "--name", "folder", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["format"] == "images"
    csv = tmp_path / "u.csv"
    csv.write_text("sentence\nthe movie\nthe plot\n", encoding="utf-8")
    r = run_cli("dataset", "add", str(csv), "--name", "u", "--text-col", "sentence", "--no-labels")
    assert r.exit_code == 0, r.output
    assert "2 rows, 0 labels" in r.output


def test_demo_commands(run_cli):
    r = run_cli("dataset", "demo", "digits", "--rows", "100", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["name"] == "digits" and d["n_rows"] == 100 and d["labels"] == [str(i) for i in range(10)]
    assert run_cli("dataset", "demo", "sentiment", "--name", "s").exit_code == 0
    r = run_cli("dataset", "demo", "text")
    assert r.exit_code == 0 and "lm" in r.output
    r = run_cli("dataset", "demo", "digits", "--rows", "100")
    assert r.exit_code == 1 and "dataset 'digits' already exists" in r.output
    names = [x["name"] for x in json.loads(run_cli("dataset", "ls", "--json").output)]
    assert names == ["digits", "s", "text"]


def test_every_dataset_command_has_help(run_cli):
    from relman.cli import cli

    dataset = cli.commands["dataset"]
    for name, cmd in dataset.commands.items():
        assert cmd.help, name
        r = run_cli("dataset", name, "--help")
        assert r.exit_code == 0 and "Usage" in r.output
        for p in cmd.params:
            if p.param_type_name == "option":
                assert p.help, f"dataset {name} {p.opts}"


def test_dataset_commands_import_nothing_heavy():
    assert heavy_loaded_by("relman.cli", "relman.commands.data_cmds", "relman.app.datasets", also=("sklearn", "PIL")) == []


def test_add_checks_labels_against_a_model_version(run_cli, tmp_path: Path, tiny_bert):
    assert run_cli("import", str(tiny_bert), "--model", "bert").exit_code == 0
    bad = tmp_path / "three.csv"
    bad.write_text("text,label\nthe movie,positive\nthe plot,neutral\n", encoding="utf-8")
    r = run_cli("dataset", "add", str(bad), "--name", "three", "--check-model", "bert@latest")
    assert r.exit_code == 1
    assert r.output.strip() == ("error: dataset 'three' has labels the model does not know: neutral "
                                "(model labels: negative, positive)")
    assert json.loads(run_cli("dataset", "ls", "--json").output) == []
    good = tmp_path / "two.csv"
    good.write_text("text,label\nthe movie,positive\nthe plot,negative\n", encoding="utf-8")
    r = run_cli("dataset", "add", str(good), "--name", "two", "--check-model", "bert@latest")
    assert r.exit_code == 0, r.output
