"""The desktop application (PySide6 + pyqtgraph): the only package that imports Qt.

Layout:
- `qt_main.MainWindow`: a thin shell (tabs, Models dock, menus, timers, settings, selection);
- `views`: the view protocol and the one list of views (a new view = one file + one entry);
- `qt_<view>.py`: one file per view (versions, board, compare, lineage, jobs, audit);
- `controllers/`: the actions, one module per area, calling `relman.app` directly;
- `selection`, `qt_messages`, `qt_tree`, `qt_dialogs`, `qt_models`: shared pieces.

Qt-bound modules are named `qt_*.py` (plus `selection` and `controllers`); the plain modules
(`snapshot`, `views`, `resources`) hold logic that does not need Qt. Nothing here imports
torch, and nothing here reads large files: that work goes through the job queue.
"""
