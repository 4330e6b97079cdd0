"""The core's checking path: what a validation proves, decided in one place for every backend."""

from storage_core.verify.check import CheckSettings, check_claims, sample_uris
from storage_core.verify.footer import Limits
from storage_core.verify.rows import Reference, source_of_uri
from storage_core.verify.store import ListedObject, Meter, ObjectError, ObjectStore, ObjectTail

__all__ = [
    "CheckSettings",
    "Limits",
    "ListedObject",
    "Meter",
    "ObjectError",
    "ObjectStore",
    "ObjectTail",
    "Reference",
    "check_claims",
    "sample_uris",
    "source_of_uri",
]
