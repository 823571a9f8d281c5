"""JSON from files we did not write (configs, safetensors headers, policies, datasets,
bundle manifests), parsed with limits.

`json.loads` of text nested 100 000 levels deep raises RecursionError (a traceback, not a
message), and a document nested a few hundred levels deep parses but breaks later code that
walks it recursively (canonical dumps, policy validation). `loads` turns both into one-line
errors of the caller's type and caps the nesting depth at `MAX_DEPTH`.
"""

from __future__ import annotations

import json
from typing import Any

from relman.errors import RelmanError

MAX_DEPTH = 64


def depth(obj: Any) -> int:
    """Nesting depth of lists/objects, computed without recursion."""
    best = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            best = max(best, d)
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            best = max(best, d)
            stack.extend((v, d + 1) for v in o)
    return best


def loads(text: str | bytes, what: str, *, error: type[RelmanError] = RelmanError, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `text` (JSON) or raise `error` naming `what` on one line."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        obj = json.loads(text)
    except UnicodeDecodeError:
        raise error(f"{what}: not UTF-8 text") from None
    except RecursionError:
        raise error(f"{what}: JSON nested too deeply (more than {max_depth} levels)") from None
    except json.JSONDecodeError as e:
        raise error(f"{what}: not valid JSON ({e})") from None
    if depth(obj) > max_depth:
        raise error(f"{what}: JSON nested too deeply (more than {max_depth} levels)")
    return obj
