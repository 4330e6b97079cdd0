"""pytest plugin: the conformance kit fixtures (filled in by the core issue)."""
