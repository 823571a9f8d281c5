"""Use cases the GUI and the CLI both call: thin, transactional, Qt-free, torch-free at import."""

from relman.app.job_kinds import register_app_kinds

register_app_kinds()
