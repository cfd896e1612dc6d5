"""The pool's Parquet schema and conversions between Arrow tables and model inputs.

Every pool (and test set) is a set of Parquet files with these columns:

* ``row_id``  int64, unique and stable: the key of every score, label and selection.
* ``group``   int64, the sensitive attribute / group index (0..G-1).
* ``label``   int64, the hidden class label (simulated oracle; may be absent for real pools).
* exactly one feature column:
    * ``image``    fixed_size_list<uint8>[H*W*C], pixels in HWC order; the shape is stored in
      the schema metadata under ``rayfal.image_shape`` as JSON ``[H, W, C]``;
    * ``features`` fixed_size_list<float32>[D], a tabular feature vector;
    * ``uri``      string, an image file by path or URI (local, ``file://``, ``s3://``, ``gs://``),
      decoded where it is used (:mod:`rayfal.data.images`); the input shape ``[C, H, W]`` comes
      from the job (``dataset.image_size``/``channels``) or the schema metadata
      ``rayfal.image_input`` (JSON ``{"size": N, "channels": C}``, written by
      ``rayfal data index-images``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

ROW_ID = "row_id"
GROUP = "group"
LABEL = "label"
IMAGE = "image"
FEATURES = "features"
IMAGE_SHAPE_KEY = b"rayfal.image_shape"
URI = "uri"
IMAGE_INPUT_KEY = b"rayfal.image_input"


def image_table(
    row_id: np.ndarray,
    images: np.ndarray,
    group: np.ndarray,
    label: np.ndarray | None = None,
) -> pa.Table:
    """Build a pool table from uint8 images ``[N, H, W, C]`` (zero-copy for the pixels)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
    n, h, w, c = images.shape
    flat = pa.array(images.reshape(-1), type=pa.uint8())
    cols = {
        ROW_ID: pa.array(np.asarray(row_id, dtype=np.int64)),
        IMAGE: pa.FixedSizeListArray.from_arrays(flat, h * w * c),
        GROUP: pa.array(np.asarray(group, dtype=np.int64)),
    }
    if label is not None:
        cols[LABEL] = pa.array(np.asarray(label, dtype=np.int64))
    _check_lengths(cols, n)
    table = pa.table(cols)
    return table.replace_schema_metadata({IMAGE_SHAPE_KEY: json.dumps([h, w, c]).encode()})


def feature_table(
    row_id: np.ndarray,
    features: np.ndarray,
    group: np.ndarray,
    label: np.ndarray | None = None,
) -> pa.Table:
    """Build a pool table from a float feature matrix ``[N, D]``."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {features.shape}")
    n, d = features.shape
    cols = {
        ROW_ID: pa.array(np.asarray(row_id, dtype=np.int64)),
        FEATURES: pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), d),
        GROUP: pa.array(np.asarray(group, dtype=np.int64)),
    }
    if label is not None:
        cols[LABEL] = pa.array(np.asarray(label, dtype=np.int64))
    _check_lengths(cols, n)
    return pa.table(cols)


def _check_lengths(cols: Mapping[str, pa.Array], n: int) -> None:
    bad = {k: len(v) for k, v in cols.items() if len(v) != n}
    if bad:
        raise ValueError(f"column lengths differ from the {n} feature rows: {bad}")


def feature_column(schema: pa.Schema) -> str:
    """Name of the feature column (``image`` or ``features``) of a pool schema."""
    names = set(schema.names)
    if IMAGE in names:
        return IMAGE
    if FEATURES in names:
        return FEATURES
    if URI in names:
        return URI
    raise ValueError(f"no '{IMAGE}' or '{FEATURES}' column (nor an image-file '{URI}' "
                     f"column); columns are {sorted(names)}")


def uri_input_shape(schema: pa.Schema, size: int | None = None,
                    channels: int | None = None) -> tuple[int, int, int]:
    """``(C, H, W)`` of a ``uri`` pool: ``size``/``channels`` when given, else the schema's
    ``rayfal.image_input`` metadata (``channels`` default 3)."""
    field_type = schema.field(URI).type
    if not (pa.types.is_string(field_type) or pa.types.is_large_string(field_type)):
        raise ValueError(f"column '{URI}' must hold strings (paths or URIs), found {field_type}")
    meta = schema.metadata or {}
    stored: dict = {}
    if IMAGE_INPUT_KEY in meta:
        try:
            stored = json.loads(meta[IMAGE_INPUT_KEY])
        except (ValueError, UnicodeDecodeError):
            stored = None
        if not isinstance(stored, dict):
            raise ValueError(f"schema metadata '{IMAGE_INPUT_KEY.decode()}' must be JSON "
                             f'{{"size": N, "channels": C}}, found {meta[IMAGE_INPUT_KEY][:60]!r}')
    size = size if size is not None else stored.get("size")
    channels = channels if channels is not None else stored.get("channels", 3)
    if size is None:
        raise ValueError(f"a '{URI}' pool needs an image size: set dataset.image_size, or index "
                         f"it with `rayfal data index-images --image-size N`")
    for name, v in (("size", size), ("channels", channels)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"image {name} must be a positive integer, found {v!r}")
    if channels not in (1, 3):
        raise ValueError(f"image files decode to 1 or 3 channels, not {channels}")
    return (int(channels), int(size), int(size))


def input_shape(schema: pa.Schema) -> tuple[int, ...]:
    """Model input shape of one row: ``(C, H, W)`` for images, ``(D,)`` for features."""
    col = feature_column(schema)
    if col == URI:
        return uri_input_shape(schema)
    field_type = schema.field(col).type
    if not pa.types.is_fixed_size_list(field_type):
        raise ValueError(f"column '{col}' must be a fixed-size list, found {field_type}")
    if col == FEATURES:
        return (field_type.list_size,)
    meta = schema.metadata or {}
    if IMAGE_SHAPE_KEY not in meta:
        raise ValueError(f"image column without '{IMAGE_SHAPE_KEY.decode()}' schema metadata")
    h, w, c = json.loads(meta[IMAGE_SHAPE_KEY])
    return (c, h, w)


def to_model_input(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Turn a feature column (``[N, K]`` array or array of arrays) into float32 model inputs.

    Images (uint8, HWC) become float32 ``[N, C, H, W]`` in [0, 1]; features stay ``[N, D]``;
    image files (a ``uri`` column: strings or :class:`rayfal.data.images.ImageRefs`) are read
    and decoded here by :func:`rayfal.data.images.decode_uris` (an unreadable file is an error
    naming its row_id, when known, and URI).
    """
    from rayfal.data.images import decode_uris, is_uri_batch

    if is_uri_batch(values):
        return decode_uris(values, shape).x
    arr = values
    if arr.dtype == object:
        arr = np.stack(arr) if len(arr) else np.zeros((0, int(np.prod(shape))), np.float32)
    n = arr.shape[0]
    if len(shape) == 3:
        c, h, w = shape
        x = arr.reshape(n, h, w, c).astype(np.float32) * np.float32(1.0 / 255.0)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return np.ascontiguousarray(arr.reshape(n, shape[0]), dtype=np.float32)


def column_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Fixed-size-list column -> ``[N, K]`` numpy array without per-row Python objects."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        k = column.type.list_size
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(column), k)
    return column.to_numpy(zero_copy_only=False)
