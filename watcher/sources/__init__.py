"""Upstream clients (Parallel, Trigger.dev): the only code that talks to the providers."""
