"""Use cases the GUI and the CLI both call: thin, transactional, Qt-free, torch-free at import."""
