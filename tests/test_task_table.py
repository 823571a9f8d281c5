"""The task table and the reader table are the one source of truth: everything they name
exists, and the places that used to keep their own lists now answer from them."""

from __future__ import annotations


import pytest

from relman.modelio.inspect import guess_task_from_architecture
from relman.tasks.specs import TASKS, get_task, tasks_with_recipe, tasks_with_suite


@pytest.mark.heavy  # imports every adapter and transformers
@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_entry_names_real_parts(name):
    import transformers

    from relman.compress.registry import all_recipes
    from relman.evaluate.registry import SUITES
    from relman.tasks import runner_class
    from relman.tasks.base import Runner

    spec = get_task(name)
    cls = runner_class(name)
    assert issubclass(cls, Runner) and cls.task == name
    assert hasattr(transformers, spec.auto_class)
    assert spec.modality in ("text", "image") and spec.labels in ("row", "token", "none")
    assert set(spec.suites) <= set(SUITES) and set(spec.default_suites) <= set(spec.suites)
    restricted = {r.name for r in all_recipes() if r.tasks is not None}
    assert set(spec.recipes) <= restricted, "a task names a recipe that is not task-restricted"
    from relman.data.formats import READERS

    kinds = {r.kind for r in READERS.values()} | {"image"}  # parquet with an image column
    assert set(spec.data_kinds) <= kinds, "a task reads a dataset kind no reader produces"


def test_suites_recipes_and_cli_derive_from_the_table():
    import relman.cli  # noqa: F401  (registers the commands; importing a command module first is a cycle)
    from relman.commands.catalog_cmds import import_
    from relman.compress.registry import get_recipe
    from relman.evaluate.registry import default_suites, get_suite

    assert get_suite("quality").tasks == tasks_with_suite("quality")
    assert "feature-extraction" not in get_suite("quality").tasks
    assert set(get_suite("fidelity").tasks) == set(TASKS)
    assert get_recipe("finetune").tasks == tasks_with_recipe("finetune")
    assert get_recipe("int4-weight-only").tasks == ("causal-lm",)
    assert default_suites("causal-lm", True) == ["size", "latency", "quality"]
    assert default_suites("feature-extraction", True) == ["size", "latency"]
    task_option = next(p for p in import_.params if p.name == "task")
    assert list(task_option.type.choices) == list(TASKS)


def test_architecture_suffixes_pick_the_most_specific_task():
    assert guess_task_from_architecture("BertForSequenceClassification") == "text-classification"
    assert guess_task_from_architecture("ViTForImageClassification") == "image-classification"
    assert guess_task_from_architecture("GPT2LMHeadModel") == "causal-lm"
    assert guess_task_from_architecture("LlamaForCausalLM") == "causal-lm"
    assert guess_task_from_architecture("BertModel") == "feature-extraction"
    assert guess_task_from_architecture("BertForPreTraining") is None


def test_every_reader_entry_names_a_real_function():
    from relman.data.formats import READERS, format_of_suffix
    from relman.data.readers import guess_format

    for reader in READERS.values():
        assert callable(reader.function()), reader.name
        if reader.folder:
            assert callable(reader.list_entries()), reader.name
        for suffix in reader.suffixes:
            assert format_of_suffix(suffix.upper()) == reader.name
            assert guess_format(f"x{suffix}") == reader.name


def test_the_light_tables_import_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, relman.tasks.specs, relman.data.formats, relman.evaluate.registry, "
            "relman.compress.recipes; heavy = [m for m in ('numpy', 'torch', 'transformers') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_model_loading_learns_the_tasks_from_the_table_without_importing_it_itself():
    """modelio sits below tasks: it keeps its own small registry, which the task table fills
    (brought in on first use, like a format's loader), so a fresh process that only imports
    modelio still loads every task's model class and guesses every task."""
    import subprocess
    import sys

    code = ("import sys; from relman.modelio import loading, inspect; "
            "assert 'relman.tasks.specs' not in sys.modules; "
            "known = list(loading.task_models()); "
            "from relman.tasks.specs import TASKS; "
            "assert known == list(TASKS), known; "
            "print(inspect.guess_task({'architectures': ['BertForTokenClassification']})[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "token-classification"
