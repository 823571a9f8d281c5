"""The `fair-threshold` format: per-group decision thresholds over a pinned parent version.

A version of this format holds no weights. Its files are

    relman_postprocessor.json   the rule (below) and the pin of the parent: version id, ref,
                                manifest sha256, format and task
    postprocess.py              a stdlib-only reader of that rule, for whoever runs the parent
                                outside relman (relman itself never imports or runs this file)

The rule is what Fairlearn's `ThresholdOptimizer` fitted (relman.compress.fairness_threshold),
written out as data — never a pickle — so it can be read, reviewed and applied anywhere:

    score s       = softmax probability of `positive_label` from the parent's logits
    per group g   : p = p0·[s op0 t0] + p1·[s op1 t1]            (op is ">" or "<")
                    and, where the fit added it (equalized odds), p = p_ignore·c + (1 − p_ignore)·p
    decision      = positive when u < p, with u = the first 8 bytes of
                    sha256("<seed>:" + the row's text in UTF-8 | the image's raw bytes) / 2**64

The randomisation (p strictly between 0 and 1 for scores between a group's two thresholds) is
Fairlearn's; u is a hash of the input, not a random draw, so the same row gets the same
decision in every suite, every run and in the shipped reader.

**The group attribute is needed at prediction time**: a row without a group, or with a group
the rule was not fitted on, is refused. What the wrapped runner returns is a decision, not a
probability: two log-scores, the decided class at log(1 − 1e-6), the other at log(1e-6), so
every suite's argmax reads the post-processed decision (and fidelity's KL measures decisions).
Batches made without a dataset (latency, memory on synthetic inputs) carry no group: they are
timed under the first group's rule with u = 0, which costs the same.

A materialised folder also holds `.relman-parent.json` (written by `materialize`), pointing
to the parent's materialised folder; `parent_folder` checks those bytes against the pin.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from relman.errors import AdapterBaseError, EvaluationError, ModelImportError

if TYPE_CHECKING:
    from relman.data.dataset import Dataset

FORMAT = "fair-threshold"
RULE = "relman_postprocessor.json"
READER = "postprocess.py"
POINTER = ".relman-parent.json"
KIND = "group-threshold"
RULE_VERSION = 1
FLOOR = 1e-6  # the log-score floor of the class not decided
MAX_GROUPS = 10_000


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_rule(rule: Any, where: str) -> dict[str, Any]:
    """The rule's fields, types and ranges (nothing in it is executed; this keeps a hand-edited
    or hostile file from reaching the arithmetic as something else)."""
    if not isinstance(rule, dict) or rule.get("kind") != KIND or rule.get("format_version") != RULE_VERSION:
        raise ModelImportError(f"{where}: not a relman {KIND} rule (format_version {RULE_VERSION})")
    labels = rule.get("labels")
    if not (isinstance(labels, list) and len(labels) == 2 and all(isinstance(x, str) for x in labels)):
        raise ModelImportError(f"{where}: 'labels' must name the parent's two labels")
    if rule.get("positive_index") not in (0, 1):
        raise ModelImportError(f"{where}: 'positive_index' must be 0 or 1")
    if not isinstance(rule.get("seed"), int) or isinstance(rule.get("seed"), bool):
        raise ModelImportError(f"{where}: 'seed' must be a whole number")
    groups = rule.get("groups")
    if not isinstance(groups, dict) or not groups or len(groups) > MAX_GROUPS:
        raise ModelImportError(f"{where}: 'groups' must map each group to its thresholds")
    for g, r in groups.items():
        ok = isinstance(r, dict) and all(_finite(r.get(k)) and 0 <= r[k] <= 1 for k in ("p0", "p1"))
        for key in ("operation0", "operation1"):
            op = r.get(key) if isinstance(r, dict) else None
            ok = ok and isinstance(op, dict) and op.get("operator") in (">", "<") and _finite(op.get("threshold"))
        if ok and "p_ignore" in r:
            ok = all(_finite(r.get(k)) and 0 <= r[k] <= 1 for k in ("p_ignore", "prediction_constant"))
        if not ok:
            raise ModelImportError(f"{where}: the thresholds of group {str(g)[:40]!r} are malformed")
    parent = rule.get("parent")
    if not (isinstance(parent, dict) and isinstance(parent.get("manifest_sha256"), str)
            and len(parent["manifest_sha256"]) == 64 and isinstance(parent.get("version_id"), int)
            and isinstance(parent.get("ref"), str) and isinstance(parent.get("format"), str)):
        raise ModelImportError(f"{where}: 'parent' must pin the parent version (id, ref, format, manifest sha256)")
    if parent["format"] == FORMAT:
        raise ModelImportError(f"{where}: the parent is itself a {FORMAT} version; not supported")
    return rule


def read_rule(folder: Path | str) -> dict[str, Any]:
    from relman import jsonlimits

    path = Path(folder) / RULE
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ModelImportError(f"{path} is not readable ({e.strerror or e})") from None
    return check_rule(jsonlimits.loads(raw, f"{path} is not a readable JSON file", error=ModelImportError), str(path))


def is_postprocessor_folder(folder: Path | str) -> bool:
    return (Path(folder) / RULE).is_file()


# -- applying the rule --------------------------------------------------------------------------
def positive_probability(rule: dict[str, Any], scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Fairlearn's probability of a positive decision for each row (its `_pmf_predict`)."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.zeros(len(scores), dtype=np.float64)
    groups = np.asarray([str(g) for g in groups], dtype=object)
    unknown = sorted(set(groups.tolist()) - set(rule["groups"]))
    if unknown:
        raise EvaluationError(f"the per-group thresholds were fitted for groups {', '.join(sorted(rule['groups']))}; "
                              f"rows of group {unknown[0]!r} cannot be decided")
    for g, r in rule["groups"].items():
        m = groups == g
        if not m.any():
            continue
        s = scores[m]
        p = sum(r[f"p{i}"] * _apply_op(r[f"operation{i}"], s) for i in (0, 1))
        if "p_ignore" in r:
            p = r["p_ignore"] * r["prediction_constant"] + (1 - r["p_ignore"]) * p
        out[m] = p
    return out


def _apply_op(op: dict[str, Any], s: np.ndarray) -> np.ndarray:
    t = float(op["threshold"])
    return (s > t if op["operator"] == ">" else s < t).astype(np.float64)


def row_uniform(seed: int, key: bytes) -> float:
    """The row's u in [0, 1): a hash of its input, so a decision never depends on run or batch."""
    digest = hashlib.sha256(f"{seed}:".encode() + key).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def row_keys(ds: "Dataset") -> list[bytes]:
    """What u is hashed from: each row's text (UTF-8), or its image's raw bytes."""
    if ds.texts is not None:
        return [t.encode("utf-8") for t in ds.texts]
    if ds.images is not None:
        return [np.ascontiguousarray(im).tobytes() for im in ds.images]
    raise EvaluationError(f"dataset '{ds.name}' has neither texts nor images to decide on")


def softmax_positive(logits: np.ndarray, positive: int) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e[:, positive] / e.sum(axis=1)
    return out


def decide(rule: dict[str, Any], logits: np.ndarray, groups: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """1 where the post-processed decision is the positive label, else 0."""
    p = positive_probability(rule, softmax_positive(logits, int(rule["positive_index"])), groups)
    return (np.asarray(uniforms, dtype=np.float64) < p).astype(np.int64)


def decision_scores(rule: dict[str, Any], positive: np.ndarray) -> np.ndarray:
    """Two log-scores per row whose argmax is the decision (see the module docstring)."""
    pos = int(rule["positive_index"])
    cls = np.where(np.asarray(positive) == 1, pos, 1 - pos)
    out = np.full((len(cls), 2), math.log(FLOOR), dtype=np.float32)
    out[np.arange(len(cls)), cls] = math.log1p(-FLOOR)
    return out


# -- the parent ---------------------------------------------------------------------------------
def _describe(parent: dict[str, Any]) -> str:
    return f"{parent['ref']} (version id {parent['version_id']}, manifest {parent['manifest_sha256'][:12]})"


def find_parent(catalog: Any, rule: dict[str, Any], ref: str) -> Any:
    """The pinned parent: by id while its manifest still matches, else a version with that manifest."""
    from relman.errors import NotFound

    pin = rule["parent"]
    try:
        v = catalog.get_version(int(pin["version_id"]))
    except NotFound:
        v = None
    if v is not None and v.manifest_sha256 == pin["manifest_sha256"] and not getattr(v, "deleted", False):
        return v
    for row in catalog.query("SELECT id FROM versions WHERE manifest_sha256 = ? ORDER BY id", [pin["manifest_sha256"]]):
        other = catalog.get_version(row["id"])
        if not getattr(other, "deleted", False) and other.format != FORMAT:
            return other
    raise AdapterBaseError(f"{ref} applies per-group thresholds to {_describe(pin)}, which is not in this catalog "
                           "with that manifest; import that parent version first")


def materialize(catalog: Any, version: Any, workdir: Path) -> Path:
    """Lay out the rule in `workdir/v<id>` and its pinned parent beside it, and point one to the other."""
    from relman.modelio.loading import materialize_version

    dest = Path(workdir) / f"v{version.id}"
    if not dest.exists():
        catalog.materialize(version.id, dest)
    rule = read_rule(dest)
    parent = find_parent(catalog, rule, version.ref)
    parent_dir = materialize_version(catalog, parent.id, workdir)
    (dest / POINTER).write_text(json.dumps({"folder": str(parent_dir.resolve()), "ref": parent.ref,
                                            "format": parent.format}), encoding="utf-8")
    return dest


def parent_folder(folder: Path | str, *, verify: bool = True) -> tuple[Path, str]:
    """(materialised parent folder, its format); with `verify` its bytes must hash to the pin
    (a LoRA parent is checked the way its own loader checks it, against its own pin)."""
    from relman.modelio.peft_adapter import folder_manifest

    folder = Path(folder)
    rule = read_rule(folder)
    pointer = folder / POINTER
    if not pointer.is_file():
        raise AdapterBaseError(f"{folder} holds per-group thresholds for {_describe(rule['parent'])}; the parent is "
                               "not laid out beside it (load it through the catalog)")
    target = Path(json.loads(pointer.read_text(encoding="utf-8")).get("folder", ""))
    if not target.is_dir():
        raise AdapterBaseError(f"{folder}: the parent {_describe(rule['parent'])} is missing (no folder at {target})")
    if verify:
        skip = {".relman-base.json"}  # a LoRA parent's own pointer is not one of its files
        files = [p for p in target.rglob("*") if p.is_file() and p.name not in skip]
        if files and folder_manifest_of(target, files, folder_manifest) != rule["parent"]["manifest_sha256"]:
            raise AdapterBaseError(f"{folder}: the files laid out for {_describe(rule['parent'])} do not hash to "
                                   "the pinned manifest: the parent was altered, so the thresholds are not applied")
    return target, str(rule["parent"]["format"])


def folder_manifest_of(target: Path, files: list[Path], whole: Callable[[Path], str]) -> str:
    """The manifest over `files` only (a parent folder may hold a pointer that is not its file)."""
    if len(files) == sum(1 for p in target.rglob("*") if p.is_file()):
        return whole(target)
    from relman.catalog.catalog import manifest_sha

    hashes = {}
    for f in sorted(files):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        hashes[f.relative_to(target).as_posix()] = h.hexdigest()
    return manifest_sha(hashes)


# -- the runner --------------------------------------------------------------------------------
def wrap_runner(folder: Path, task: str, device: str, threads: int | None,
                open_runner: Callable[..., Any]) -> Any:
    """The parent's runner with the rule applied after every prediction.

    A subclass of the parent runner's own class, made here, overriding `prepare` (which keeps
    each row's group and u beside the batch) and `predict` (which turns the parent's logits into
    the decision). Every suite goes through those two, so quality, fairness, robustness, fidelity
    and latency all measure the post-processed version; gradients (FGSM, explain) still flow
    through the parent's backend, which is the model the decision is made from."""
    rule = read_rule(folder)
    parent_dir, parent_fmt = parent_folder(folder)
    inner = open_runner(parent_dir, parent_fmt, task, device, threads)
    names = inner.label_names
    if names and names != rule["labels"]:
        raise ModelImportError(f"{folder}: the thresholds were fitted for labels {rule['labels']}, the parent "
                               f"predicts {names}")
    base = type(inner)

    class PostProcessedRunner(base):  # type: ignore[misc, valid-type]
        def prepare(self, ds: "Dataset", seq_len: int | None = None) -> Any:
            if ds.groups is None:
                raise EvaluationError(f"{self.version_note}: dataset '{ds.name}' has no group column, and the group "
                                      "attribute is needed at prediction time")
            batch = base.prepare(self, ds, seq_len)
            batch.meta["groups"] = np.asarray([str(g) for g in ds.groups], dtype=object)
            batch.meta["uniforms"] = np.asarray([row_uniform(rule["seed"], k) for k in row_keys(ds)])
            return batch

        def predict(self, batch: Any) -> np.ndarray:
            logits = base.predict(self, batch)
            groups = batch.meta.get("groups")
            if groups is None:  # a synthetic batch (latency, memory): same work, first group's rule
                groups = np.asarray([next(iter(rule["groups"]))] * len(logits), dtype=object)
            uniforms = batch.meta.get("uniforms", np.zeros(len(logits)))
            return decision_scores(rule, decide(rule, logits, groups, uniforms))

    runner = PostProcessedRunner.__new__(PostProcessedRunner)
    runner.__dict__.update(inner.__dict__)
    runner.folder, runner.fmt = Path(folder), FORMAT
    runner.postprocessor = rule
    runner.parent_runner = inner
    runner.version_note = f"a {FORMAT} version over {rule['parent']['ref']}"
    return runner


# -- the reader shipped with the version -----------------------------------------------------------
READER_SOURCE = '''"""Apply relman's per-group decision thresholds (relman_postprocessor.json) outside relman.

Standard library only. Run the parent model named in the JSON ("parent"), take the softmax
probability of the positive label (positive_index) as `score`, and call

    decide(rule, score, group, key)   -> 1 (positive label) or 0

where `group` is the row's group attribute (NEEDED at prediction time; an unknown group is an
error) and `key` is the row's text encoded as UTF-8 (or an image's raw uint8 bytes).
"""
import hashlib
import json


def load(path="relman_postprocessor.json"):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _op(op, s):
    return 1.0 if (s > op["threshold"] if op["operator"] == ">" else s < op["threshold"]) else 0.0


def positive_probability(rule, score, group):
    r = rule["groups"].get(str(group))
    if r is None:
        raise ValueError("no thresholds for group %r (fitted: %s)" % (group, ", ".join(sorted(rule["groups"]))))
    p = r["p0"] * _op(r["operation0"], score) + r["p1"] * _op(r["operation1"], score)
    if "p_ignore" in r:
        p = r["p_ignore"] * r["prediction_constant"] + (1 - r["p_ignore"]) * p
    return p


def decide(rule, score, group, key):
    digest = hashlib.sha256(("%d:" % rule["seed"]).encode() + key).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    return 1 if u < positive_probability(rule, score, group) else 0
'''
