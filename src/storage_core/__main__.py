"""``python -m storage_core`` behaves like ``storage-core``."""

from storage_core.cli import main

main()
