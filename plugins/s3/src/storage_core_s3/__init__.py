"""storage-core-s3: the S3 backend of storage-core (grant service, uploader, reader for the core's checks).

Entry point ``s3`` -> :mod:`storage_core_s3.plugin`. The grant service is :func:`storage_core_s3.grants.create_app`
(run it with ``storage-core s3 serve``); test helpers live in :mod:`storage_core_s3.testing`.
"""


def __getattr__(name: str) -> object:
    # The integration guide's name, imported lazily so that loading the plugin stays cheap.
    if name == "S3ValidatorStorage":
        from storage_core_s3.facade import S3ValidatorStorage

        return S3ValidatorStorage
    raise AttributeError(name)
