"""The ``run-watcher`` command line."""
