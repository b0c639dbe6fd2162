"""Scratch folders under ``<lake.root>/_scratch``: intermediate files that executors read.

A folder for one block (``scratch``) or one kept between runs while its inputs stay the
same (``kept_scratch``). The lake has one writer, so a folder of the same purpose left by
an earlier run is removed when the next is made.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from interestlake.lake.uris import readable_uri


class ScratchFolders:
    """The scratch folders of ``LakeTables`` (a mixin): uses its ``lake``."""

    @contextmanager
    def scratch(self, purpose: str) -> Iterator[str]:
        """A new folder under ``<lake.root>/_scratch`` for intermediate files executors read.

        Removed when the block ends, whether it succeeds or fails. Folders of the
        same purpose left by a killed run are removed first: the lake has one
        writer, so nothing else can be using them.
        """
        import pyarrow.fs as pafs

        fs, path, uri = self._scratch_folder(purpose, f"{purpose}-{uuid.uuid4().hex}")
        try:
            yield uri
        finally:
            if fs.get_file_info(path).type != pafs.FileType.NotFound:
                fs.delete_dir(path)

    def kept_scratch(self, purpose: str, key: str, write: Callable[[str], object]) -> tuple[str, bool]:
        """A folder under ``<lake.root>/_scratch`` holding files that depend only on ``key``, kept between runs.

        ``write(uri)`` fills the folder (a Spark write, whose ``_SUCCESS`` marker comes
        last) unless an earlier run completed it; a half-written folder is written
        again. Intermediate files that follow table versions, such as the recommend
        stage's item matrix, are so written once per version instead of once per run.
        Folders of the same purpose under another key are removed.

        Returns:
            The folder's URI, and whether this call wrote it.
        """
        import hashlib

        import pyarrow.fs as pafs

        fs, path, uri = self._scratch_folder(purpose, f"{purpose}-kept-{hashlib.sha256(key.encode()).hexdigest()[:16]}")
        if fs.get_file_info(f"{path}/_SUCCESS").type == pafs.FileType.File:
            return uri, False
        write(uri)
        return uri, True

    def _scratch_folder(self, purpose: str, name: str):
        """(filesystem, path, URI) of ``_scratch/<name>``, after removing the other folders of ``purpose``.

        Only this lake's single writer uses its scratch folders, so any other folder of
        the purpose is left over from an earlier run.
        """
        import pyarrow.fs as pafs

        parent = f"{self.lake.root.rstrip('/')}/_scratch"
        fs, base = pafs.FileSystem.from_uri(readable_uri(parent))
        for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
            if info.base_name.startswith(f"{purpose}-") and info.base_name != name:
                fs.delete_dir(info.path)
        return fs, f"{base.rstrip('/')}/{name}", f"{parent}/{name}"
