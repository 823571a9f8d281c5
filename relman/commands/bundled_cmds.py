"""`relman run-bundled MODULE ARGS...` (hidden): run a tool module the app bundles as if by
`python -m MODULE`, so the installers' frozen app, which has no Python interpreter, can still
start it in its own process (`[sys.executable, "run-bundled", ...]`). Only the modules named in
BUNDLED_MODULES run: this is no way to execute arbitrary code.
"""

from __future__ import annotations

import click

from relman.errors import RelmanError

# module -> why relman runs it in a separate process
BUNDLED_MODULES = {
    "onnxruntime_genai.models.builder": "ONNX Runtime GenAI's model builder (relman.compress.export.genai_export)",
}


def run_module_as_main(module: str, args: list[str]) -> None:
    """`python -m module args...`, in this process (sys.argv set as the module expects)."""
    import runpy
    import sys

    if module not in BUNDLED_MODULES:
        raise RelmanError(f"'{module}' is not a tool relman runs (known: {', '.join(sorted(BUNDLED_MODULES))})")
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


@click.command("run-bundled", hidden=True, add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("module")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run_bundled(module: str, args: tuple[str, ...]) -> None:
    """Run a bundled tool module as `python -m` would (used by the frozen app)."""
    run_module_as_main(module, list(args))


COMMANDS = [run_bundled]
