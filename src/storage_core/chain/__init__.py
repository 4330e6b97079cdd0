"""Everything that touches bittensor lives in this package; the rest of storage-core never imports it."""
