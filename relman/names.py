"""Names people type and read: the allowed character set, and escaping for terminals.

A name that looks like another (`tiny` and `tiny\\u200b`), carries a terminal escape sequence
(`\\x1b[2J`) or ends in a space (`1.0.0 `) is refused where it enters the catalog: on import,
bundle import, approval, tagging. The rules (also in README, "Names"):

- **model, dataset and tag names**: 1-128 characters; letters and digits of any script
  (Unicode categories L and Nd) and `.`, `_`, `-`, `+`; starting with a letter or digit.
- **people** (approvers, actors, `--by`): 1-128 characters; the same, plus single inner spaces
  and `@`, `'`; no leading or trailing space.
- **versions**: semantic versions exactly (`MAJOR.MINOR.PATCH[-PRERELEASE]`, ASCII), see
  `relman.catalog.semver`.
- **formats and tasks** in bundles: one of the known values.

Control characters (Cc), format characters (Cf: zero-width spaces, bidi overrides), other
separators and combining marks are never allowed. Text from the catalog or from a file that is
printed to a terminal goes through `terminal_safe`, which shows such characters as escapes.
"""

from __future__ import annotations

import unicodedata

from relman.errors import RelmanError

MAX_LEN = 128
_NAME_PUNCT = set("._-+")
_PERSON_PUNCT = _NAME_PUNCT | set("@' ")


class NameError_(RelmanError):
    """A name with characters outside the allowed set."""


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    code = f"U+{ord(ch):04X}"
    return f"{code} {name}".strip() if name else code


def _ok_char(ch: str, punct: set[str]) -> bool:
    if ch in punct:
        return True
    cat = unicodedata.category(ch)
    return cat.startswith("L") or cat == "Nd"


def check(text: object, what: str, *, person: bool = False) -> str:
    """Return `text` if it is an allowed name (see module doc), else raise a one-line error."""
    if not isinstance(text, str):
        raise NameError_(f"{what} must be text, not {type(text).__name__}")
    shown = terminal_safe(text)
    if not text:
        raise NameError_(f"{what} is empty")
    if len(text) > MAX_LEN:
        raise NameError_(f"{what} '{shown[:40]}…' is longer than {MAX_LEN} characters")
    punct = _PERSON_PUNCT if person else _NAME_PUNCT
    for ch in text:
        if not _ok_char(ch, punct):
            raise NameError_(f"{what} '{shown}' contains {_describe(ch)}, which is not allowed (letters, digits and "
                             f"{' '.join(sorted(punct - {' '}))}{' and inner spaces' if person else ''}; see README, "
                             "Names)")
    if not (_ok_char(text[0], set()) or (person and text[0] in "'")):
        raise NameError_(f"{what} '{shown}' must start with a letter or a digit")
    if person and (text != text.strip() or "  " in text):
        raise NameError_(f"{what} '{shown}' has leading, trailing or double spaces")
    return text


def check_name(text: object, what: str = "name") -> str:
    return check(text, what)


def check_person(text: object, what: str = "person") -> str:
    return check(text, what, person=True)


def terminal_safe(text: object) -> str:
    """`text` with control, format and other invisible characters shown as escapes, so that
    printing catalog contents can never drive the terminal or hide characters."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable() and "\x1b" not in s:
        return s
    out = []
    for ch in s:
        if ch in "\n\t" or (ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Co", "Cn")):
            out.append(ch if ch not in "\n" else "\\n")
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)
