"""What a recipe is (does it compress?) and what a task is (classifier, LM...) are declared once,
in the recipe's and the task's registry entries; gate conditions read them."""

from __future__ import annotations

from relman.compress import registry
from relman.compress.registry import Recipe
from relman.release import gates


def test_a_new_compression_recipe_is_compressed_by_its_declaration_alone() -> None:
    assert gates._compressed({"name": "int4-weight-only"}) and not gates._compressed({"name": "finetune"})
    assert not gates._compressed({"name": "zz-squeeze"}) and not gates._compressed(None)
    registry.all_recipes()
    registry.register(Recipe(name="zz-squeeze", title="Squeeze", target="relman.targets:resolve", compresses=True))
    try:
        assert gates._compressed({"name": "zz-squeeze"})  # `when compressed` rules now apply to its children
        assert registry.get_recipe("zz-squeeze").describe()["compresses"] is True
    finally:
        del registry.RECIPES["zz-squeeze"]


def test_task_roles_come_from_the_task_table() -> None:
    assert gates._task_role("text-classification") == "classifier"
    assert gates._task_role("image-classification") == "classifier"
    assert gates._task_role("causal-lm") == "causal_lm"
    assert gates._task_role("feature-extraction") == "embedder"
    assert gates._task_role("no-such-task") is None
