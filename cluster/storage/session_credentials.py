"""Whether an object store signs URLs with a session's credentials, which end within hours.

A presigned URL is valid until its own expiry or until the credentials that signed it expire,
whichever comes first. On S3, credentials that carry a session token are temporary: IRSA and
EKS Pod Identity (about an hour, refreshed by botocore), an instance or container role, an
assumed role, SSO. A URL they sign for 24 hours dies with them. Long-lived access keys have no
token, and their URLs live as long as they say (SigV4: 7 days at most).

Other fsspec stores are taken as they sign: gcsfs signs with a service account's key, which has
no session (it cannot sign at all without one).
"""

from __future__ import annotations

import fsspec
from fsspec.asyn import sync


def signs_with_session(fs: fsspec.AbstractFileSystem) -> bool:
    """True when `fs` presigns URLs with temporary credentials (S3 with a session token)."""
    if not type(fs).__module__.startswith("s3fs.") or fs.anon:
        return False
    if fs.key:  # credentials given to s3fs itself: a token makes them a session's
        return bool(fs.token)
    return sync(fs.loop, _chain_has_token, fs)


async def _chain_has_token(fs) -> bool:
    """The token of the credentials botocore's chain resolved for this filesystem's session (the
    same object its client signs with: the session caches it)."""
    await fs.set_session()
    credentials = await fs.session.get_credentials()
    if credentials is None:
        return False
    return bool((await credentials.get_frozen_credentials()).token)

