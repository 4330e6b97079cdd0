"""Signed round manifests: what a miner holds on a backend, a URI index over it, and copy samples.

* :mod:`.document`: the format, and the checks a validator makes before believing one;
* :mod:`.uri_index`: the exact URI index (one bucket read per looked-up URI names its chunk);
* :mod:`.uri_hashes`: the URI hash both sides use, and the sample copies are detected by;
* :mod:`.book`: the miner's side, which keeps each backend's chain and builds the next manifest;
* :mod:`.retention`: which of a miner's older manifests a backend may delete.
"""

from storage_core.manifest.book import BuiltManifest, ManifestBook
from storage_core.manifest.document import ChunkEntry, Manifest, ManifestError, ManifestLimits, decode_manifest

__all__ = ["BuiltManifest", "ChunkEntry", "Manifest", "ManifestBook", "ManifestError", "ManifestLimits",
           "decode_manifest"]
