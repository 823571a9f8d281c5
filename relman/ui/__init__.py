"""The desktop application (PySide6 + pyqtgraph): the only package that imports Qt.

Qt-bound modules are named `qt_*.py`; the plain modules here (`snapshot`, `backends`,
`resources`, `plotmath`) hold the logic that does not need Qt, so it can be tested and
reused without a display. Nothing here imports torch: heavy work goes through the job queue.
"""
