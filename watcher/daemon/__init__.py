"""The running process: scheduling, polling, lifecycle, logging."""
