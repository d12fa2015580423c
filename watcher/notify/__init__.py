"""Routing, rendering and delivery of notifications."""
