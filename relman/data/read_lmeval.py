"""lm-evaluation-harness task YAML with local data, read unchanged.

A task file such as::

    task: planted_colours
    dataset_path: json
    dataset_kwargs:
      data_files:
        test: colours.jsonl
    test_split: test
    output_type: multiple_choice
    doc_to_text: "Q: {{question}}\\nA:"
    doc_to_choice: "{{choices}}"
    doc_to_target: "{{label}}"

becomes one dataset: the YAML plus the data files it names (paths relative to the YAML, which
must stay inside its folder — lm-eval itself, through HF datasets, resolves them against the
working directory, so run it from the YAML's folder to read the same files), stored together, so the catalog holds exactly what was checked.
`doc_to_text` / `doc_to_choice` / `doc_to_target` / `description` follow lm-eval's rules
(`ConfigurableTask.doc_to_*`): a string that is a field name takes the field; otherwise a Jinja
template rendered with the document (StrictUndefined, `keep_trailing_newline`, the
`regex_replace` filter) — here in Jinja's immutable sandbox, since the template comes from a
file; a rendered choice list is read with `ast.literal_eval`; a rendered target of digits is an
index, a target string is looked up among the choices. The context is `description +
doc_to_text`, each continuation `target_delimiter + choice` (default " ").
`output_type: multiple_choice` gives an `mcq` dataset (the `mc` suite), `generate_until` a `qa`
dataset (the `generate` suite). What relman will not do is refused with one line: `!function`
(Python code), `include`, few-shot examples, other `dataset_path`s (anything that would download).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from relman.data.dataset import Dataset
from relman.data.mapping import ColumnMapping
from relman.data.read_lm_items import json_lines
from relman.data.text_decoding import read_utf8
from relman.errors import DatasetError

OUTPUT_TYPES = {"multiple_choice": "mcq", "generate_until": "qa"}
_LOCAL_BUILDERS = ("json",)


class _Refused(Exception):
    pass


def _loader() -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def refuse(loader: Any, suffix: str, node: Any) -> Any:
        raise _Refused(f"the tag !{suffix} at line {node.start_mark.line + 1}")

    Loader.add_multi_constructor("!", refuse)
    return Loader


def parse_yaml(path: Path, where: str) -> dict[str, Any]:
    import yaml

    text = read_utf8(path, where)
    try:
        doc = yaml.load(text, Loader=_loader())
    except _Refused as e:
        raise DatasetError(f"{where}: {e} needs Python code (lm-eval's !function), which relman never runs") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"{where}: not valid YAML{at} ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{where}: expected an lm-eval task (a mapping), got {type(doc).__name__}")
    return doc


def _data_files(task: dict[str, Any], where: str) -> dict[str, list[str]]:
    if "include" in task:
        raise DatasetError(f"{where}: 'include' is not supported; put the whole task in one file")
    builder = task.get("dataset_path")
    if builder not in _LOCAL_BUILDERS:
        raise DatasetError(f"{where}: dataset_path must be 'json' with local data_files (got {builder!r}; "
                           "relman never downloads a dataset)")
    files = (task.get("dataset_kwargs") or {}).get("data_files")
    if files is None:
        raise DatasetError(f"{where}: dataset_kwargs.data_files names no local file")
    if isinstance(files, str):
        files = {"train": [files]}
    elif isinstance(files, list):
        files = {"train": files}
    if not isinstance(files, dict):
        raise DatasetError(f"{where}: dataset_kwargs.data_files must be a path, a list or split: path")
    out: dict[str, list[str]] = {}
    for split, paths in files.items():
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise DatasetError(f"{where}: data_files for split '{split}' must be paths")
        out[str(split)] = [_safe_rel(p, where) for p in paths]
    return out


def _safe_rel(p: str, where: str) -> str:
    pp = PurePosixPath(p.replace("\\", "/"))
    if pp.is_absolute() or ".." in pp.parts or "*" in p or "?" in p:
        raise DatasetError(f"{where}: data file '{p}' must be a plain path inside the YAML's folder")
    return pp.as_posix()


def task_entries(path: Path) -> list[tuple[str, Path]]:
    """The YAML and the data files it names, as (relative path, file) pairs."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: an lm-eval task is one YAML file")
    task = parse_yaml(path, path.name)
    entries = [(path.name, path)]
    for rels in _data_files(task, path.name).values():
        for rel in rels:
            f = path.parent / rel
            if not f.is_file():
                raise DatasetError(f"{path.name}: data file '{rel}' not found next to it")
            if (rel, f) not in entries:
                entries.append((rel, f))
    return entries


def _env() -> Any:
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(pattern, repl, s, count=count)
    return env


class _Doc:
    """One document and where it came from, for error lines."""

    def __init__(self, doc: dict[str, Any], where: str) -> None:
        self.doc, self.where = doc, where


def _render(env: Any, template: str, d: _Doc, key: str) -> str:
    from jinja2 import TemplateError, UndefinedError

    try:
        return env.from_string(template).render(**d.doc)
    except UndefinedError as e:
        raise DatasetError(f"{d.where}: {key} references a missing field ({e.message})") from None
    except TemplateError as e:
        raise DatasetError(f"{d.where}: {key} is not a valid template ({e})") from None


def _field_or_template(env: Any, spec: Any, d: _Doc, key: str) -> Any:
    if isinstance(spec, str) and spec in d.doc:
        return d.doc[spec]
    if isinstance(spec, str):
        return _render(env, spec, d, key)
    return spec


def _choices(env: Any, spec: Any, d: _Doc) -> list[str]:
    if isinstance(spec, dict):
        spec = list(spec.values())
    if isinstance(spec, str):
        got = _field_or_template(env, spec, d, "doc_to_choice")
        if isinstance(got, str) and not (isinstance(spec, str) and spec in d.doc):
            try:
                got = ast.literal_eval(got)
            except (ValueError, SyntaxError):
                raise DatasetError(f"{d.where}: doc_to_choice did not give a list ({got[:60]!r})") from None
        spec = got
    if not isinstance(spec, (list, tuple)) or len(spec) < 2:
        raise DatasetError(f"{d.where}: doc_to_choice must give two choices or more")
    return [str(c) for c in spec]


def _target(env: Any, spec: Any, d: _Doc, has_choices: bool) -> Any:
    if isinstance(spec, int) and not isinstance(spec, bool):
        return spec
    if isinstance(spec, list):
        return spec
    if not isinstance(spec, str):
        raise DatasetError(f"{d.where}: doc_to_target must be a field, a template or an index")
    if spec in d.doc:
        return d.doc[spec]
    got = _render(env, spec, d, "doc_to_target")
    if got.isdigit() and has_choices:
        return int(got)
    if len(got) >= 2 and got[0] == "[" and got[-1] == "]":
        try:
            return ast.literal_eval(got)
        except (ValueError, SyntaxError):
            return got
    return got


def _docs(task: dict[str, Any], files: dict[str, Path], where: str) -> list[_Doc]:
    splits = _data_files(task, where)
    split = task.get("test_split") or task.get("validation_split")
    if split is None:
        split = "train" if list(splits) == ["train"] else None
    if split is None or split not in splits:
        raise DatasetError(f"{where}: test_split/validation_split {split!r} names no split in data_files "
                           f"({', '.join(splits)})")
    docs = []
    for rel in splits[split]:
        file = files[rel]
        if rel.endswith(".json") and read_utf8(file, rel).lstrip().startswith("["):
            rows = json.loads(read_utf8(file, rel))
            for i, obj in enumerate(rows, start=1):
                if not isinstance(obj, dict):
                    raise DatasetError(f"{rel} item {i}: expected a JSON object")
                docs.append(_Doc(obj, f"{rel} item {i}"))
        else:
            docs.extend(_Doc(obj, f"{rel} line {n}") for n, obj in json_lines(file, rel))
    if not docs:
        raise DatasetError(f"{where}: split '{split}' has no documents")
    return docs


def read_lmeval(entries: Sequence[tuple[str, Path]], mapping: ColumnMapping, *, name: str,
                labels: Sequence[str] | None = None, where: str = "") -> Dataset:
    # stored files come back sorted by path: the task is the one YAML among them
    yamls = [(rel, f) for rel, f in entries if rel.lower().endswith((".yaml", ".yml"))]
    if len(yamls) != 1:
        raise DatasetError(f"{where or name}: an lm-eval task is exactly one YAML file (found {len(yamls)})")
    yaml_rel, yaml_path = yamls[0]
    where = yaml_rel
    task = parse_yaml(yaml_path, where)
    files = dict(entries)
    output_type = task.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        raise DatasetError(f"{where}: output_type '{output_type}' is not supported (supported: "
                           f"{', '.join(OUTPUT_TYPES)})")
    if int(task.get("num_fewshot") or 0) > 0:
        raise DatasetError(f"{where}: num_fewshot > 0 is not supported (relman scores zero-shot)")
    for key in ("doc_to_text", "doc_to_target") + (("doc_to_choice",) if output_type == "multiple_choice" else ()):
        if key not in task:
            raise DatasetError(f"{where}: no '{key}'")
    env = _env()
    delimiter = str(task.get("target_delimiter", " "))
    items: list[dict[str, Any]] = []
    for d in _docs(task, files, where):
        text = _field_or_template(env, task["doc_to_text"], d, "doc_to_text")
        description = _render(env, task["description"], d, "description") if task.get("description") else ""
        context = description + str(text)
        if output_type == "multiple_choice":
            choices = _choices(env, task["doc_to_choice"], d)
            gold = _target(env, task["doc_to_target"], d, True)
            if isinstance(gold, str):
                if gold not in choices:
                    raise DatasetError(f"{d.where}: target {gold!r} is not one of the choices")
                gold = choices.index(gold)
            if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
                raise DatasetError(f"{d.where}: target {gold!r} names no choice (there are {len(choices)})")
            items.append({"context": context, "choices": choices, "gold": gold, "delimiter": delimiter})
        else:
            gold = _target(env, task["doc_to_target"], d, False)
            answers = [str(a) for a in gold] if isinstance(gold, list) else [str(gold)]
            items.append({"prompt": context, "answers": answers})
    kind = OUTPUT_TYPES[output_type]
    return Dataset(name=name, kind=kind, texts=[it.get("context", it.get("prompt")) for it in items], items=items,
                   meta={"source_schema": "lm-eval-harness", "lm_eval_task": str(task.get("task", ""))})
