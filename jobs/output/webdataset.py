"""webdataset: `shards/NNNNNN.tar`, each rendered image as `<sample>.<ext>` beside `<sample>.json`
(its metadata), in one uncompressed tar that `webdataset`, `datasets` and Ray Data read as is."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Iterator

from cluster.storage.results import Storage
from jobs.output.base import Row, StreamedShard
from jobs.output.layout import METADATA_COLUMNS, Hashing

# A sample's JSON: its metadata, less what only a failure or the layout has (a sample is always
# a rendered image), so that every sample of every shard has the same fields.
SIDECAR_COLUMNS = [c for c in METADATA_COLUMNS if c not in ("path", "error_code", "error")]


class WebDataset(StreamedShard):
    folder = "shards"
    suffix = "tar"

    def opened(self, stream: Hashing) -> None:
        self._tar = tarfile.open(fileobj=stream, mode="w|", format=tarfile.USTAR_FORMAT)

    def write(self, sample: str, image: bytes, row: Row) -> str:
        self.stream()
        file_name = f"{sample}.{self.ext}"
        sidecar = {c: row.get(c) for c in SIDECAR_COLUMNS}
        for member, data in ((file_name, image), (f"{sample}.json", json.dumps(sidecar).encode())):
            info = tarfile.TarInfo(member)
            info.size, info.mtime = len(data), 0  # no clock in the bytes: a re-run writes the same tar
            self._tar.addfile(info, io.BytesIO(data))
        return f"{self.path}.tar#{file_name}"

    def finish(self) -> None:
        self._tar.close()

    @classmethod
    def read_back(cls, storage: Storage, shard: str, ext: str, rendered: dict[str, Row]) -> Iterator[tuple[Row, bytes]]:
        with storage.fs.open(storage.path(f"{cls.folder}/{shard}.tar"), "rb") as f, \
                tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                sample, _, suffix = member.name.rpartition(".")
                if sample in rendered and suffix == ext:
                    yield rendered[sample], tar.extractfile(member).read()
