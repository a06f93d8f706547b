"""Images as files: encoding (PNG, WebP, JPEG) with the sampling metadata, and decoding inputs.

May import: cluster.spec."""
