"""The `ensemble` format: several member versions of one task run as one model.

An ensemble version stores no weights of its own. Its files are

    ensemble.json   the manifest: how outputs combine ("mean" of probabilities, weighted, or a
                    weighted majority "vote") and each member's version id, ref, format and
                    manifest sha256 (the pin), with its weight
    config.json     the members' shared config (task head, labels), so every reader that asks a
                    version for its config (suites, exporters, the card) gets the right labels
    tokenizer / image-processor files, shared by every member (the recipe refuses members
                    that read their inputs differently), so preprocessing is the members' own

Why pins by manifest sha256 and not names: a member could be deleted and another version
imported under its ref; the pin names the exact bytes the ensemble was evaluated with. Loading
lays out each member (`materialize`, which `relman.modelio.loading.materialize_version`
dispatches to) and refuses, naming the member, when it is missing or altered. The catalog also
refuses to delete a member while a live ensemble pins it (relman.app.housekeeping).

The loaded model (`EnsembleModel`) is one torch module: its forward runs each member on the
same inputs and returns `logits = log(p)` where p is the combined class distribution, so
softmax(logits) = p and every suite, the fidelity check and the ONNX exporter treat it like a
single classifier. With "vote" p is the weighted share of votes (ties broken by the mean
probability, scaled by 1e-3 so it never outweighs a vote).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relman.errors import ModelImportError

if TYPE_CHECKING:
    import torch

FORMAT = "ensemble"
MANIFEST = "ensemble.json"
POINTER = ".relman-members.json"  # written by materialize; not one of the version's files
COMBINE = ("mean", "vote")
TIE_BREAK = 1e-3  # vote: share of the mean probability added so ties go to the likelier class
MAX_MEMBERS = 64
_SHA256 = re.compile(r"[0-9a-f]{64}")
# files that decide how inputs become tensors: members must agree on them byte for byte
PREPROCESSING_FILES = ("vocab.txt", "vocab.json", "merges.txt", "tokenizer.json", "spiece.model",
                       "sentencepiece.bpe.model", "tokenizer.model", "preprocessor_config.json")


def is_ensemble_folder(folder: Path | str) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def _read_json(path: Path) -> dict[str, Any]:
    from relman import jsonlimits

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ModelImportError(f"{path} is not a readable JSON file ({e.strerror or e})") from None
    data = jsonlimits.loads(raw, f"{path} is not a readable JSON file", error=ModelImportError)
    if not isinstance(data, dict):
        raise ModelImportError(f"{path} must hold a JSON object")
    return data


def check_manifest(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The manifest's fields and types (a malformed or edited one is refused in one line)."""
    if data.get("format") != FORMAT:
        raise ModelImportError(f"{where}: not an ensemble manifest (format is {data.get('format')!r})")
    if data.get("combine") not in COMBINE:
        raise ModelImportError(f"{where}: 'combine' must be one of {', '.join(COMBINE)}")
    if not isinstance(data.get("task"), str):
        raise ModelImportError(f"{where}: 'task' must be text")
    members = data.get("members")
    if not isinstance(members, list) or not 2 <= len(members) <= MAX_MEMBERS:
        raise ModelImportError(f"{where}: 'members' must list 2 to {MAX_MEMBERS} member versions")
    for i, m in enumerate(members):
        ok = (isinstance(m, dict) and isinstance(m.get("version_id"), int) and not isinstance(m["version_id"], bool)
              and m["version_id"] > 0 and isinstance(m.get("ref"), str) and 0 < len(m["ref"]) <= 300
              and isinstance(m.get("format"), str) and m["format"] != FORMAT
              and isinstance(m.get("manifest_sha256"), str) and _SHA256.fullmatch(m["manifest_sha256"])
              and isinstance(m.get("weight"), (int, float)) and not isinstance(m["weight"], bool)
              and 0 <= m["weight"] <= 1)
        if not ok:
            raise ModelImportError(f"{where}: member {i} is malformed (version_id, ref, format, manifest_sha256, "
                                   "weight in [0, 1]; an ensemble of ensembles is not supported)")
    if abs(sum(float(m["weight"]) for m in members) - 1.0) > 1e-6:
        raise ModelImportError(f"{where}: the member weights must add up to 1")
    return data


def read_manifest(folder: Path | str) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    return check_manifest(_read_json(path), str(path))


def find_member(catalog: Any, member: dict[str, Any], ensemble_ref: str) -> Any:
    """The live version the pin names: by id when its manifest still matches, else any live
    version with the pinned manifest (an ensemble moved to another catalog with its members)."""
    from relman.errors import NotFound

    want = member["manifest_sha256"]
    try:
        v = catalog.get_version(int(member["version_id"]))
    except NotFound:
        v = None
    if v is not None and v.manifest_sha256 == want and not v.deleted:
        return v
    for row in catalog.query("SELECT id FROM versions WHERE manifest_sha256 = ? ORDER BY id", [want]):
        other = catalog.get_version(row["id"])
        if not other.deleted and other.format == member["format"]:
            return other
    what = f"{member['ref']} (manifest {want[:12]})"
    if v is not None and v.deleted:
        raise ModelImportError(f"{ensemble_ref} is an ensemble of {what}, which was deleted from this catalog")
    raise ModelImportError(f"{ensemble_ref} is an ensemble of {what}, which is not in this catalog (or was "
                           "altered); import that member version first")


def members_of(catalog: Any, version: Any) -> list[Any]:
    """The member versions of a stored ensemble version, from its manifest."""
    data = pinned_members(catalog, version)
    return [find_member(catalog, m, version.ref) for m in data["members"]]


def pinned_members(catalog: Any, version: Any) -> dict[str, Any]:
    """The checked manifest of a stored ensemble version, read from the store (nothing laid out)."""
    sha = next((a["sha256"] for a in catalog.artifacts(version.id) if a["path"] == MANIFEST), None)
    if sha is None:
        raise ModelImportError(f"{version.ref} is an ensemble without {MANIFEST}")
    return check_manifest(_read_json(catalog.store.path(sha)), f"{version.ref}: {MANIFEST}")


def materialize(catalog: Any, version: Any, workdir: Path) -> Path:
    """Lay out the ensemble in `workdir/v<id>` and each member in `workdir/v<member id>` (its own
    way: an adapter brings its base), and point the first to the others."""
    from relman.errors import IntegrityError, NotFound
    from relman.modelio.loading import materialize_version

    dest = Path(workdir) / f"v{version.id}"
    if not dest.exists():
        catalog.materialize(version.id, dest)
    data = read_manifest(dest)
    laid_out = []
    for m in data["members"]:
        member = find_member(catalog, m, version.ref)
        try:
            folder = materialize_version(catalog, member.id, workdir)
        except (IntegrityError, NotFound) as e:
            raise ModelImportError(f"{version.ref}: its member {member.ref} cannot be laid out: {e}") from None
        laid_out.append({"folder": str(Path(folder).resolve()), "ref": member.ref, "format": member.format,
                         "weight": float(m["weight"])})
    (dest / POINTER).write_text(json.dumps({"members": laid_out}), encoding="utf-8")
    return dest


def member_folders(folder: Path | str) -> list[dict[str, Any]]:
    """[{folder, ref, format, weight}] of a materialised ensemble folder."""
    folder = Path(folder)
    pointer = folder / POINTER
    if not pointer.is_file():
        raise ModelImportError(f"{folder} is an ensemble whose members are not laid out next to it (load it "
                               "through the catalog)")
    members = _read_json(pointer).get("members")
    if not isinstance(members, list) or len(members) != len(read_manifest(folder)["members"]):
        raise ModelImportError(f"{pointer}: does not match {MANIFEST}")
    return members


# -- the combined model -------------------------------------------------------------------------
def combine_probabilities(logits: list["torch.Tensor"], weights: "torch.Tensor", combine: str) -> "torch.Tensor":
    """The combined class distribution over the last axis (see the module docstring)."""
    import torch

    probs = torch.stack([torch.softmax(z.float(), dim=-1) for z in logits])  # members x ... x classes
    w = weights.to(probs.dtype).reshape((-1,) + (1,) * (probs.dim() - 1))
    mean = (w * probs).sum(0)
    if combine == "mean":
        return mean
    votes = (probs == probs.amax(dim=-1, keepdim=True)).to(probs.dtype)
    votes = votes / votes.sum(dim=-1, keepdim=True)  # a member torn between classes splits its vote
    share = (w * votes).sum(0)
    return (share + TIE_BREAK * mean) / (1.0 + TIE_BREAK)


def _model_class() -> type:
    import inspect

    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput

    class EnsembleModel(torch.nn.Module):
        """Members run on the same inputs; logits = log of the combined distribution."""

        explain_gradients = False  # no single embedding layer to integrate gradients over

        def __init__(self, members: list[torch.nn.Module], weights: list[float], combine: str, config: Any) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(members)
            self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32), persistent=False)
            self.combine = combine
            self.config = config
            self._accepts = [set(inspect.signature(m.forward).parameters) for m in members]

        def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                    token_type_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                    return_dict: bool = True, **_: Any) -> Any:
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                     "pixel_values": pixel_values}
            logits = []
            for member, accepts in zip(self.members, self._accepts):
                kwargs = {k: v for k, v in given.items() if v is not None and k in accepts}
                logits.append(member(**kwargs, return_dict=True)["logits"])
            p = combine_probabilities(logits, self.get_buffer("weights"), self.combine)
            return SequenceClassifierOutput(logits=torch.log(p.clamp_min(1e-12)))

    return EnsembleModel


def load_ensemble(folder: Path, task: str, device: str = "cpu") -> "torch.nn.Module":
    """Loader of the `ensemble` format: every member loaded its own way, combined."""
    from transformers import AutoConfig

    from relman.modelio.loading import load_torch_model

    folder = Path(folder)
    data = read_manifest(folder)
    if task != data["task"]:
        raise ModelImportError(f"{folder}: this ensemble makes a {data['task']} model, not {task}")
    members = [load_torch_model(Path(m["folder"]), task, device, fmt=m["format"]).float()
               for m in member_folders(folder)]
    for m in members:
        for p in m.parameters():
            p.requires_grad_(False)
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    model: "torch.nn.Module" = _model_class()(members, [float(m["weight"]) for m in data["members"]],
                                              data["combine"], config)
    return model.to(device).eval()


def register() -> None:
    from relman.modelio.loading import TORCH_LOADERS

    TORCH_LOADERS.setdefault(FORMAT, load_ensemble)


register()
