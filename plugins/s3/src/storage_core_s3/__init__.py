"""storage-core-s3: the S3 backend of storage-core (grant service, uploader, checker).

Entry point ``s3`` -> :mod:`storage_core_s3.plugin`. The grant service is :func:`storage_core_s3.grants.create_app`
(run it with ``storage-core s3 serve``); test helpers live in :mod:`storage_core_s3.testing`.
"""
