"""Test and demo helpers of the S3 plugin: a real SeaweedFS server and an in-process grant service."""

from storage_core_s3.testing.seaweed import SeaweedError, SeaweedFS, find_weed, free_ports
from storage_core_s3.testing.service import GrantServiceProcess

__all__ = ["GrantServiceProcess", "SeaweedError", "SeaweedFS", "find_weed", "free_ports"]
