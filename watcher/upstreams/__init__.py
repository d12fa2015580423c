"""One plugin per upstream API: its credentials, options, links and client, in one place.

The daemon asks :data:`watcher.upstreams.registry.PLUGINS` rather than branching on
the source; a new upstream is a client in :mod:`watcher.sources`, a plugin module
here and one line in the registry.
"""
