"""Small named exceptions, one per thing a user can get wrong.

Every error a user can cause is a `RelmanError`; the CLI prints its message on one line and
exits non-zero, the GUI shows it in a dialog. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RelmanError(Exception):
    """Base class: the message is meant for the user, on one line."""

    exit_code = 1


class CatalogError(RelmanError):
    """The catalog folder or database cannot be used."""


class CatalogNotWritable(CatalogError):
    pass


class CorruptCatalog(CatalogError):
    pass


class NotFound(RelmanError):
    """A model, version, dataset, job or key that does not exist."""


class DuplicateVersion(RelmanError):
    pass


class ModelImportError(RelmanError):
    """A model file or folder that cannot be imported (missing, corrupt, unsupported)."""


class UnsafeModelError(ModelImportError):
    """A model that would run code on load (pickle globals, remote code)."""


class AdapterBaseError(ModelImportError):
    """A LoRA adapter whose pinned base version is missing or no longer hashes to the pin."""


class IntegrityError(RelmanError):
    """Stored bytes no longer match their recorded hash."""


class DatasetError(RelmanError):
    """A dataset file that cannot be read with the given column mapping."""


class JobError(RelmanError):
    """A job that cannot be queued, run, cancelled or retried."""


class JobCancelled(RelmanError):
    """Raised inside a job function when the user asked it to stop."""


class RecipeError(RelmanError):
    """A compression recipe that cannot be applied to this model or with these parameters."""


class EvaluationError(RelmanError):
    """An evaluation suite that cannot run on this model / dataset."""


class ReleaseError(RelmanError):
    """A release step that the policy or the gates refuse."""


class BundleError(RelmanError):
    """A release bundle that is unsigned, tampered with, truncated or unsafe to extract."""


class HousekeepingError(RelmanError):
    """A delete, archive, restore or tag the catalog refuses (e.g. deleting the production version)."""


class DiskSpaceError(RelmanError):
    """Not enough free disk space for what was asked (the message says how much is needed)."""
