"""Core errors in the window's words: a CLI flag in a message becomes the GUI field that sets it.

The app layer's checks are shared by the CLI and the GUI (one source of truth), so their
messages name the CLI's flags ("name one with --parent"). Shown beside the combo box that sets
the same thing, a flag is a dead end: the user looks for a command line they do not have.
`in_gui_terms` rewrites each `--flag` (with its placeholder, e.g. `--dataset NAME`) into the
field's label in quotes; a dialog passes its own labels (`ValidatingDialog.gui_fields`) over
the window-wide ones in `FIELDS`, and a flag that no form has becomes a neutral "the 'seq len'
setting" rather than a flag.
"""

from __future__ import annotations

import re
from typing import Mapping

# flag → the label of the field that sets it (the dialogs' and views' form labels)
FIELDS: dict[str, str] = {
    "--parent": "Fidelity against",
    "--dataset": "Dataset",
    "--max-drop": "Max accuracy drop",
    "--objective": "Objective",
    "--device": "Device",
    "--examples": "Examples",
    "--why": "Reason",
    "--reason": "Reason",
    "--override": "Override failing gates",
    "--model": "Model name",
    "--version": "Version",
    "--name": "Name",
    "--format": "Format",
    "--text-col": "Text column",
    "--label-col": "Label column",
    "--group-col": "Group column (fairness)",
    "--val-fraction": "Validation share",
    "--test-fraction": "Test share",
    "--key": "Signing key",
    "--new-architecture": "New architecture",
}
_PLACEHOLDER = r"(?:\s+(?:[A-Z][A-Z_]*|k=v|KEY=VALUE)(?![a-z]))?"
_FLAG = re.compile(r"(?<![\w-])--(?P<flag>[a-z][a-z0-9-]*)" + _PLACEHOLDER)
_PARAM = re.compile(r"(?<![\w-])(?:--param|-p)\s+(?P<kv>[A-Za-z_][\w]*=\S*)")


def in_gui_terms(text: str, fields: Mapping[str, str] | None = None) -> str:
    """`text` with every CLI flag replaced by the GUI field that sets it."""
    labels = dict(FIELDS, **(fields or {}))
    text = _PARAM.sub(lambda m: f"the parameter {m.group('kv')}", text)

    def field(m: re.Match[str]) -> str:
        flag = f"--{m.group('flag')}"
        if flag in labels:
            return f"'{labels[flag]}'"
        return f"the '{m.group('flag').replace('-', ' ')}' setting"
    return _FLAG.sub(field, text)
