"""The main views: one small protocol, one list. (Plain module: no Qt at import.)

Adding a view is one file plus one entry in `VIEWS`:

1. Write `relman/ui/qt_<name>.py` with a QWidget class that has

       name = "disk"                      # key: settings, shortcuts, window.<name>, screenshots
       title = "Disk usage"               # tab text
       def __init__(self, window): ...    # build widgets; connect signals to window.selection
                                          # (shared selection) or to a controller
                                          # (window.release / window.work / window.job_actions)
       def refresh(self, state): ...      # redraw from a ViewState (snapshot, catalog, model,
                                          # selection); called only when shown and stale
       def apply_theme(self, dark): ...   # light/dark

   and, when it wants them, the optional hooks of `ViewHooks` (selection or model changes
   while it is on screen, job table changes).
2. Add `ViewSpec("disk", "Disk usage", "relman.ui.qt_disk:DiskView")` to `VIEWS`.

The window then makes the tab (in list order, Ctrl+<n> to show it), builds the view when it
is first shown (`lazy=True`, e.g. for pyqtgraph views, so the window opens fast) or at
start-up, calls `refresh` when the catalog changed and the view is shown, passes theme
changes, and clears it on a catalog switch (a new catalog rebuilds every view from scratch).
The view is reachable as `window.view("disk")` (and `window.disk`). Views never call the app
layer to change anything themselves: they emit a request that a controller handles.
"""

from __future__ import annotations

from relman import targets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from relman.catalog import Catalog
    from relman.ui.snapshot import Snapshot


@dataclass(frozen=True)
class ViewSpec:
    name: str
    title: str
    target: str  # "module:Class" (imported when the view is built)
    lazy: bool = False  # build when first shown (heavy imports such as pyqtgraph)

    def load(self) -> Any:
        return targets.resolve(self.target)


VIEWS: list[ViewSpec] = [
    ViewSpec("versions", "Versions", "relman.ui.qt_versions:VersionsView"),
    ViewSpec("board", "Release board", "relman.ui.qt_board:ReleaseBoard"),
    ViewSpec("compare", "Compare", "relman.ui.qt_compare:CompareView", lazy=True),
    ViewSpec("lineage", "Lineage", "relman.ui.qt_lineage:LineageView"),
    ViewSpec("jobs", "Jobs", "relman.ui.qt_jobs:JobsView", lazy=True),
    ViewSpec("audit", "Audit", "relman.ui.qt_audit:AuditView"),
    ViewSpec("disk", "Disk", "relman.ui.qt_disk:DiskView"),
    ViewSpec("datasets", "Datasets", "relman.ui.qt_datasets:DatasetsView"),
    ViewSpec("overview", "Overview", "relman.ui.qt_overview:OverviewView"),
    ViewSpec("explain", "Explain", "relman.ui.qt_explain:ExplainView"),
    ViewSpec("generate", "Generate", "relman.ui.qt_generate:GenerateView"),
    ViewSpec("diff", "Diff", "relman.ui.qt_diff:DiffView"),
    ViewSpec("hooks", "Hooks", "relman.ui.qt_hooks:HooksView"),
]


def view_names() -> tuple[str, ...]:
    return tuple(v.name for v in VIEWS)


def spec(name: str) -> ViewSpec:
    for v in VIEWS:
        if v.name == name:
            return v
    raise KeyError(f"no view named '{name}' (views: {', '.join(view_names())})")


@dataclass
class ViewState:
    """What a view draws from: the catalog's snapshot (read once per change, shared by all
    views), the catalog itself (for views that read more, e.g. the audit log), the model in
    focus and the selected version ids."""

    snapshot: "Snapshot"
    catalog: "Catalog"
    model: str | None = None
    selected: list[int] = field(default_factory=list)


@runtime_checkable
class View(Protocol):
    name: str
    title: str

    def refresh(self, state: ViewState) -> None: ...

    def apply_theme(self, dark: bool) -> None: ...


class ViewHooks:
    """Optional hooks a view may define (the window calls them only if present):

    - `on_selection(state)`: the selection changed while the view is on screen (cheap update;
      a hidden view is refreshed when next shown instead),
    - `on_jobs(catalog)`: the jobs table changed (progress, status), whether shown or not
      once built,
    - `follows_selection_hidden = True`: also call `on_selection` while hidden (for views
      whose selection update is cheap and must stay in step, e.g. the versions table).
    """
