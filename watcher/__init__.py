"""run-watcher: watch Parallel and Trigger.dev runs, notify on transitions."""

__version__ = "0.1.0"
