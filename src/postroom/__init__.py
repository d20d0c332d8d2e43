"""postroom: queued email for Python."""
