"""storage-core backend plugin."""
