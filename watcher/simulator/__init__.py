"""A loopback simulator of the Parallel and Trigger.dev APIs, and a webhook receiver."""
