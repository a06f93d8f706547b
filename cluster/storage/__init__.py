"""Bytes somewhere else: result storage on any fsspec filesystem with signed URLs
(`results.py`), the guarded fetch of client-given URLs (`guarded_fetch.py`: no request turned
inward), and atomic local files.

May import: cluster.spec."""
