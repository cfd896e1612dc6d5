"""Image files as pool rows: read by URI, decoded, resized and scaled where they are used.

A pool of image files keeps a ``uri`` column (a local path, ``file://``, or any URI that
``pyarrow.fs`` opens: ``s3://``, ``gs://``, ``hdfs://``; other schemes through fsspec when it
is installed) instead of decoded pixels. The files are read and decoded batch by batch inside
the scoring actors/tasks and the Ray Train workers (and on the driver for the test set), by
:func:`decode_uris`, which :func:`rayfal.data.schema.to_model_input` calls for such a column.

The transform is a pure function of the model input shape ``(C, H, W)``, so every process that
knows the shape decodes a file identically:

1. read the bytes, decode with Pillow (JPEG, PNG, WebP, ... anything Pillow opens), apply the
   EXIF orientation;
2. convert to RGB (``C = 3``) or greyscale (``C = 1``);
3. resize so the image covers ``H x W`` (bilinear, aspect ratio kept) and crop the centre
   ``H x W`` (torchvision's ``Resize`` + ``CenterCrop`` at ``H = W``; ``PIL.ImageOps.fit``);
4. float32 in ``[0, 1]``, ``[C, H, W]`` -- the same contract as a decoded ``image`` pool, so
   every model, strategy and attack (PGD clamps to ``[0, 1]``) works unchanged. Per-channel
   normalisation (e.g. ImageNet mean/std) belongs to the model: the torchvision backbones
   (:mod:`rayfal.models.torchvision_backbone`) do it in their trunk.

A file that cannot be read or decoded is an :class:`ImageDecodeError` naming its ``row_id``
(when known) and URI -- or, with ``on_error="skip"`` (the scoring actors, from the job's
``dataset.on_error``), the row is left out of the batch and reported (:data:`log` warning with
every row_id and URI, and :attr:`Decoded.errors`). Never silently.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlparse

import numpy as np

log = logging.getLogger("rayfal")

OnError = Literal["fail", "skip"]
_SHOWN = 10


class ImageDecodeError(ValueError):
    """Image files that could not be read or decoded; the message names row_ids and URIs."""

    def __init__(self, errors: Sequence[tuple[int | None, str, str]]) -> None:
        self.errors = list(errors)
        super().__init__(format_errors(self.errors))


def format_errors(errors: Sequence[tuple[int | None, str, str]]) -> str:
    """``"N unreadable image file(s): row_id 5: s3://b/x.jpg (reason); ..."`` (first 10)."""
    parts = [(f"row_id {rid}: " if rid is not None else "") + f"{uri} ({why})"
             for rid, uri, why in errors[:_SHOWN]]
    more = f"; ... and {len(errors) - _SHOWN} more" if len(errors) > _SHOWN else ""
    return f"{len(errors)} unreadable image file(s): " + "; ".join(parts) + more


class ImageRefs(np.ndarray):
    """The ``uri`` column of some pool rows (an object array of strings, usable as one) with
    the rows' ids in :attr:`row_ids` -- what :meth:`rayfal.data.pool.Pool.take` returns for it
    -- so that whoever decodes them (a Ray Train worker, the driver) names the rows of files
    that fail. Indexing keeps the ids aligned; pickling (``ray.put``) keeps them."""

    row_ids: np.ndarray | None

    def __new__(cls, uris, row_ids=None) -> ImageRefs:
        obj = np.asarray(uris, dtype=object).view(cls)
        obj.row_ids = None if row_ids is None else np.asarray(row_ids, dtype=np.int64)
        if obj.row_ids is not None and obj.row_ids.shape != obj.shape:
            raise ValueError("ImageRefs: uris and row_ids lengths differ")
        return obj

    def __array_finalize__(self, obj) -> None:
        ids = getattr(obj, "row_ids", None)
        self.row_ids = ids if ids is not None and ids.shape == self.shape else None

    def __getitem__(self, idx):
        out = super().__getitem__(idx)
        if isinstance(out, ImageRefs):
            out.row_ids = None if self.row_ids is None else self.row_ids[idx]
        return out

    def __reduce__(self):
        return (ImageRefs, (np.asarray(self).view(np.ndarray), self.row_ids))

    def __reduce_ex__(self, protocol):
        return self.__reduce__()

    @property
    def uris(self) -> np.ndarray:
        """The URIs as a plain object array."""
        return self.view(np.ndarray)


@dataclass
class Decoded:
    """Model inputs of the rows that decoded (``x``: float32 ``[n_ok, C, H, W]``), which rows
    they are (``ok``: bool mask over the input rows) and ``errors`` ``(row_id, uri, reason)``."""

    x: np.ndarray
    ok: np.ndarray
    errors: list[tuple[int | None, str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading


_FILESYSTEMS: dict[tuple[str, str], object] = {}


def _is_local(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme == "" or scheme == "file" or (len(scheme) == 1 and os.name == "nt")


def local_path(uri: str) -> str:
    """The local path of a plain path or ``file://`` URI."""
    if uri.startswith("file://"):
        return urlparse(uri).path
    return uri


def read_bytes(uri: str) -> bytes:
    """The bytes of the file ``uri`` names (local path, ``file://``, or a ``pyarrow.fs`` /
    fsspec URI). Remote file systems are built once per process and bucket; credentials and
    endpoints come from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...)."""
    if _is_local(uri):
        with open(local_path(uri), "rb") as fh:
            return fh.read()
    fs, path = filesystem_for(uri)
    if hasattr(fs, "open_input_stream"):  # pyarrow.fs
        with fs.open_input_stream(path) as fh:
            return fh.read()
    with fs.open(path, "rb") as fh:  # fsspec
        return fh.read()


def filesystem_for(uri: str):
    """``(filesystem, path)`` for a remote URI: ``pyarrow.fs`` (``s3``, ``gs``, ``hdfs``, ...;
    S3 honours ``AWS_ENDPOINT_URL``), else fsspec; cached per (scheme, bucket)."""
    parsed = urlparse(uri)
    key = (parsed.scheme, parsed.netloc)
    path = f"{parsed.netloc}{parsed.path}"
    fs = _FILESYSTEMS.get(key)
    if fs is None:
        fs = _make_filesystem(uri, parsed.scheme)
        _FILESYSTEMS[key] = fs
    return fs, path


def _make_filesystem(uri: str, scheme: str):
    import pyarrow.fs as pafs

    if scheme in ("s3", "s3a"):
        kwargs = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            ep = urlparse(endpoint)
            kwargs["endpoint_override"] = ep.netloc or ep.path
            kwargs["scheme"] = ep.scheme or "https"
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs)
    try:
        fs, _ = pafs.FileSystem.from_uri(uri)
        return fs
    except (ValueError, NotImplementedError, OSError):  # ArrowInvalid is a ValueError
        pass
    try:
        import fsspec
    except ImportError:
        raise ValueError(f"no file system for '{scheme}://' URIs (pyarrow.fs does not know it "
                         "and fsspec is not installed)") from None
    return fsspec.filesystem(scheme)


# ----------------------------------------------------------------------------- decoding


def decode_image(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Bytes of an image file -> uint8 ``[H, W, C]`` (module docstring, steps 1-3)."""
    from PIL import Image, ImageOps

    c, h, w = shape
    if c not in (1, 3):
        raise ValueError(f"image files decode to 1 or 3 channels, not {c}")
    with Image.open(io.BytesIO(data)) as img:
        img.load()  # a truncated file fails here, not later
        img = ImageOps.exif_transpose(img)
        img = img.convert("RGB" if c == 3 else "L")
        img = ImageOps.fit(img, (w, h), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))
        arr = np.asarray(img, dtype=np.uint8)
    return arr.reshape(h, w, c)


def decode_uris(uris, shape: tuple[int, ...], *, row_ids: np.ndarray | None = None,
                on_error: OnError = "fail", threads: int | None = None) -> Decoded:
    """Read and decode ``uris`` into model inputs float32 ``[n, C, H, W]`` in ``[0, 1]``.

    ``threads`` files are read and decoded at once (Pillow releases the GIL while decoding);
    default: torch's thread count in this process, which the scoring actors and Train workers
    set to their CPU share. Each file is decoded on its own, so the result does not depend on
    it.

    ``on_error="fail"``: any file that cannot be read or decoded raises
    :class:`ImageDecodeError` naming every such row_id and URI of the batch; ``"skip"``: those
    rows are left out (``ok`` is False for them, ``x`` holds the others) and reported in a
    warning and in ``errors``."""
    if isinstance(uris, ImageRefs):
        row_ids = uris.row_ids if row_ids is None else row_ids
    uris = np.asarray(uris, dtype=object).view(np.ndarray)
    if len(shape) != 3:
        raise ValueError(f"image files need a (C, H, W) input shape, got {tuple(shape)}")
    c, h, w = (int(v) for v in shape)
    n = len(uris)
    x = np.empty((n, h, w, c), dtype=np.uint8)
    ok = np.ones(n, dtype=bool)
    why: list[str | None] = [None] * n

    def one(i: int) -> None:
        uri = uris[i]
        if not isinstance(uri, str) or not uri:
            why[i] = "empty or missing URI"
            return
        try:
            x[i] = decode_image(read_bytes(uri), (c, h, w))
        except Exception as exc:  # noqa: BLE001  (any read/decode failure is reported)
            why[i] = f"{type(exc).__name__}: {exc}"

    if threads is None:
        import torch

        threads = torch.get_num_threads()
    if threads > 1 and n > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(int(threads), n)) as ex:
            list(ex.map(one, range(n)))
    else:
        for i in range(n):
            one(i)
    errors: list[tuple[int | None, str, str]] = []
    for i in range(n):
        if why[i] is not None:
            ok[i] = False
            uri = uris[i]
            errors.append((None if row_ids is None else int(row_ids[i]),
                           uri if isinstance(uri, str) and uri else repr(uri), why[i]))
    if errors:
        if on_error != "skip":
            raise ImageDecodeError(errors)
        log.warning("skipped %s", format_errors(errors))
        x = x[ok]
    out = x.astype(np.float32) * np.float32(1.0 / 255.0)
    return Decoded(np.ascontiguousarray(out.transpose(0, 3, 1, 2)), ok, errors)


def is_uri_batch(values) -> bool:
    """Whether a feature column's values are image URIs (strings) rather than pixels or
    features."""
    if isinstance(values, ImageRefs):
        return True
    arr = np.asarray(values) if not isinstance(values, np.ndarray) else values
    if arr.dtype.kind in ("U", "S"):
        return True
    return arr.dtype == object and len(arr) > 0 and isinstance(arr.flat[0], str)


__all__ = [
    "Decoded",
    "ImageDecodeError",
    "ImageRefs",
    "decode_image",
    "decode_uris",
    "filesystem_for",
    "format_errors",
    "is_uri_batch",
    "read_bytes",
]
