"""Open rasterio datasets per process, never shared with forked DataLoader workers."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

import rasterio
import rasterio.errors

from stsun_lightning.errors import unreadable_file_error

__all__ = ["Handles"]


def _close_all(datasets: dict[Any, Any]) -> None:
    for dataset in datasets.values():
        dataset.close()
    datasets.clear()


class Handles:
    """Open rasterio datasets of this process (re-opened after a fork).

    Handles inherited through ``fork`` are never used: a DataLoader worker opens its
    own (shared handles return wrong pixels or crash). They are closed by a finaliser
    that runs at exit, before the interpreter tears down the modules GDAL needs to
    close them cleanly.

    Args:
        opener: opens a path (default: ``rasterio.open``); must be picklable.
    """

    def __init__(self, opener: Callable[[str], Any] | None = None) -> None:
        self.opener = opener
        self.pid = -1
        self.open: dict[Any, Any] = {}
        self._finalizer = weakref.finalize(self, _close_all, self.open)

    def get(self, path: Any) -> Any:
        """The open dataset of ``path`` in this process."""
        if self.pid != os.getpid():
            self.pid, self.open = os.getpid(), {}
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _close_all, self.open)
        if path not in self.open:
            if self.opener is not None:
                self.open[path] = self.opener(str(path))
            else:
                try:
                    self.open[path] = rasterio.open(path)
                except rasterio.errors.RasterioIOError as error:
                    raise unreadable_file_error(path, error, action="open") from None
        return self.open[path]

    def __getstate__(self) -> dict:
        return {"opener": self.opener}  # never pickle open handles into worker processes

    def __setstate__(self, state: dict) -> None:
        self.__init__(state.get("opener"))
