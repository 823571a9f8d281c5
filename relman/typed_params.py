"""Typed, checked settings declared as data: recipe parameters and evaluation options.

Registries declare them so the CLI (`--param k=v`, `-o k=v`), the GUI's generated forms and
the job queue validate values the same way, before any work is queued, without importing the
code that will use them.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from relman.errors import RelmanError


MAX_WHOLE = 2**53  # any whole-number setting without its own maximum


def _whole_number(raw: Any) -> int:
    """An int from an int, an integral finite float, or decimal text; nothing else (no bools)."""
    if isinstance(raw, bool):
        raise ValueError(raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw) or raw != int(raw):
            raise ValueError(raw)
        return int(raw)
    text = str(raw).strip()
    if len(text) > 20:
        raise ValueError(raw)
    return int(text)


@dataclass(frozen=True)
class TypedValue:
    name: str
    type: builtins.type  # bool, int, float, str, or list (comma-separated strings)
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None

    error: ClassVar[builtins.type[RelmanError]] = RelmanError
    noun: ClassVar[str] = "setting"

    def parse(self, raw: Any) -> Any:
        """Convert a CLI/GUI value and check it; errors name the setting and the value."""
        try:
            if self.type is bool:
                if isinstance(raw, bool):
                    value: Any = raw
                elif str(raw).lower() in ("1", "true", "yes", "on"):
                    value = True
                elif str(raw).lower() in ("0", "false", "no", "off"):
                    value = False
                else:
                    raise ValueError(raw)
            elif self.type is list:
                value = [s.strip() for s in raw.split(",") if s.strip()] if isinstance(raw, str) else list(raw)
            elif self.type is str:
                value = "" if raw is None else str(raw)
            elif self.type is int:
                value = _whole_number(raw)
            elif self.type is float:
                if isinstance(raw, bool):
                    raise ValueError(raw)
                value = float(raw)
                if not math.isfinite(value):  # NaN passes every comparison: refuse it here
                    raise self.error(f"{self.noun} '{self.name}' must be a finite number, got {raw}")
            else:
                value = self.type(raw)
        except (TypeError, ValueError, OverflowError):
            raise self.error(f"{self.noun} '{self.name}' expects {self.type.__name__}, got '{raw}'") from None
        if self.type is int and self.max is None and abs(value) > MAX_WHOLE:
            raise self.error(f"{self.noun} '{self.name}' must be at most {MAX_WHOLE}, got {value}")
        if self.choices is not None and value not in self.choices:
            raise self.error(f"{self.noun} '{self.name}' must be one of {', '.join(map(str, self.choices))}, "
                             f"got '{raw}'")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            if self.max is None:
                bound = f"at least {self.min}"
            elif self.min is None:
                bound = f"at most {self.max}"
            else:
                bound = f"within [{self.min}, {self.max}]"
            raise self.error(f"{self.noun} '{self.name}' must be {bound}, got {value}")
        return value
