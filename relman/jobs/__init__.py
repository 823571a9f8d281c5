"""Background jobs: a persistent queue in the catalog, worker processes, progress and cancel."""
