"""Label Studio as an oracle: query batches imported as tasks, finished annotations read back.

Plain HTTP (``requests``) against Label Studio's REST API; no SDK. Checked against Label Studio
1.23 (Community, SQLite), see ``tests/test_label_studio.py`` and ``make test-labelstudio``.

Authentication. Label Studio (>= 1.14) has two kinds of API key, and the client takes either:

* a **personal access token** (the default since the JWT auth of 1.14; *Account & Settings →
  Personal Access Token*): a JWT *refresh* token. The client exchanges it for a short-lived
  access token (``POST /api/token/refresh/``), sends ``Authorization: Bearer <access>`` and
  refreshes again when the server answers 401;
* a **legacy token** (40 hex characters; *Account & Settings → Legacy Token*), sent as
  ``Authorization: Token <key>``. New organizations have legacy tokens disabled; an admin
  enables them in *Organization → API Tokens Settings* or the server is started with
  ``label-studio start --enable-legacy-api-token`` (``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN``).

A key with the shape of a JWT (three dot-separated base64 parts) is used as a personal access
token, anything else as a legacy token. The key never appears in an error message.

The Label Studio side of a campaign::

    project  = one per campaign (exact title), labelling config: Choices over the class names
               for an ``<Image name="image" value="$image"/>`` or ``<Text name="text" .../>``
    task     = one per queried pool row, ``data = {row_id, group, score, rank, image|text, ...}``
    answer   = a finished (not cancelled, non-empty) annotation whose ``choices`` result names
               one class; ``label`` is that class's index in the campaign's class list

The pure half (:func:`batch_to_tasks`, :func:`tasks_to_json`, :func:`parse_export`) needs no
server: it is also the format of ``rayfal labels export/import --format label-studio``
(a task list to import by hand, and Label Studio's *JSON* export read back).
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

__all__ = [
    "FROM_NAME",
    "Annotation",
    "LabelStudioAPIError",
    "LabelStudioClient",
    "LabelStudioConnectionError",
    "annotations_by_annotator",
    "batch_to_tasks",
    "label_config",
    "labels_for_rows",
    "parse_export",
    "tasks_to_json",
]

FROM_NAME = "label"  # the Choices control's name in the labelling config
_OBJECT = {"image": ("Image", "image"), "text": ("Text", "text")}  # kind -> (tag, name = $key)
_SHOWN = 10  # ids named in one error message
_PAGE = 100


class LabelStudioConnectionError(ConnectionError):
    """Label Studio could not be reached, or answered with a server error (5xx)."""


class LabelStudioAPIError(ValueError):
    """Label Studio refused a request (4xx: bad key, missing project, invalid data)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Annotation:
    """One finished annotation of one task: ``label`` is an index into the campaign's classes."""

    row_id: int
    label: int
    annotator: str
    created_at: str
    task_id: int
    annotation_id: int | None = None


# ------------------------------------------------------------------------------------------
# labelling config
# ------------------------------------------------------------------------------------------


def _check_kind(kind: str) -> tuple[str, str]:
    if kind not in _OBJECT:
        raise ValueError(f"label studio: kind must be 'image' or 'text', got {kind!r}")
    return _OBJECT[kind]


def _check_classes(classes: Sequence[str]) -> list[str]:
    names = [str(c) for c in classes]
    if not names:
        raise ValueError("label studio: at least one class name is needed")
    if any(not n.strip() for n in names):
        raise ValueError(f"label studio: empty class name in {names}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"label studio: repeated class names {dup}")
    return names


def label_config(classes: Sequence[str], *, kind: str) -> str:
    """The labelling config of a campaign: one required single choice over ``classes``."""
    tag, name = _check_kind(kind)
    names = _check_classes(classes)
    view = ET.Element("View")
    ET.SubElement(view, tag, name=name, value=f"${name}")
    choices = ET.SubElement(view, "Choices", name=FROM_NAME, toName=name, choice="single-radio",
                            required="true", showInline="true")
    for n in names:
        ET.SubElement(choices, "Choice", value=n)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode")


def _config_classes(config: str) -> tuple[list[str], str | None]:
    """The Choice values of the config's ``FROM_NAME`` control and the kind of its object."""
    try:
        root = ET.fromstring(config)
    except ET.ParseError:
        return [], None
    control = next((c for c in root.iter("Choices") if c.get("name") == FROM_NAME), None)
    if control is None:
        return [], None
    names = [c.get("value", "") for c in control.iter("Choice")]
    target = control.get("toName")
    kind = next((k for k, (tag, _) in _OBJECT.items()
                 for o in root.iter(tag) if o.get("name") == target), None)
    return names, kind


# ------------------------------------------------------------------------------------------
# query batch -> tasks
# ------------------------------------------------------------------------------------------


def _columns(rows: Any) -> dict[str, Any]:
    if hasattr(rows, "columns") and hasattr(rows, "__getitem__"):  # pandas.DataFrame
        return {str(c): rows[c].to_numpy() for c in rows.columns}
    if isinstance(rows, Mapping):
        return dict(rows)
    raise ValueError("batch_to_tasks: rows must be a pandas DataFrame or a dict of arrays")


def _ids(values: Iterable[Any]) -> str:
    vals = [str(v) for v in values]
    more = f" (and {len(vals) - _SHOWN} more)" if len(vals) > _SHOWN else ""
    return ", ".join(vals[:_SHOWN]) + more


def _png_data_uri(pixels: np.ndarray, row_id: int) -> str:
    from PIL import Image

    img = np.asarray(pixels)
    if img.dtype != np.uint8:
        if img.dtype.kind == "f" and np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1:
            img = np.round(img * 255)
        if not np.isfinite(img).all() or img.min() < 0 or img.max() > 255:
            raise ValueError(f"batch_to_tasks: image of row_id {row_id} is not uint8 pixels")
        img = img.astype(np.uint8)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (3, 4)):
        raise ValueError(f"batch_to_tasks: image of row_id {row_id} has shape {img.shape}; "
                         "expected [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_MAGIC = [(b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF8", "gif"),
          (b"RIFF", "webp")]


def _bytes_data_uri(blob: bytes, row_id: int) -> str:
    kind = next((k for m, k in _MAGIC if blob.startswith(m)), None)
    if kind is None:
        raise ValueError(f"batch_to_tasks: image bytes of row_id {row_id} are not PNG, JPEG, "
                         "GIF or WebP")
    return f"data:image/{kind};base64," + base64.b64encode(blob).decode("ascii")


def _uri(value: Any, row_id: int, local_files_root: str | None) -> str:
    uri = str(value)
    if not uri or uri == "nan":
        raise ValueError(f"batch_to_tasks: empty image URI for row_id {row_id}")
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", uri) or uri.startswith("/data/"):
        return uri  # http(s)://, s3://, gs://, data:, or already a Label Studio local-files URL
    if local_files_root is None:
        raise ValueError(
            f"batch_to_tasks: image URI {uri!r} of row_id {row_id} is a local path; give "
            "local_files_root (Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT) or a URL")
    root = local_files_root.rstrip("/") + "/"
    if not uri.startswith(root):
        raise ValueError(f"batch_to_tasks: image path {uri!r} of row_id {row_id} is not under "
                         f"local_files_root {local_files_root!r}")
    return "/data/local-files/?d=" + quote(uri[len(root):])


def _scalar(value: Any) -> Any:
    """A JSON-safe scalar (NaN/inf become None, numpy scalars become Python ones)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _feature_text(vec: Any, names: Sequence[str] | None, row_id: int) -> str:
    x = np.asarray(vec, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise ValueError(f"batch_to_tasks: NaN/inf features in row_id {row_id}")
    if names is not None and len(names) != len(x):
        raise ValueError(f"batch_to_tasks: {len(names)} feature_names but {len(x)} features")
    keys = names if names is not None else [f"f{i}" for i in range(len(x))]
    return ", ".join(f"{k}={v:.6g}" for k, v in zip(keys, x.tolist(), strict=True))


def batch_to_tasks(
    rows: Any,
    *,
    kind: str,
    images: np.ndarray | None = None,
    image_shape: Sequence[int] | None = None,
    uri_column: str | None = None,
    feature_names: Sequence[str] | None = None,
    local_files_root: str | None = None,
) -> list[dict]:
    """Label Studio tasks (``[{"data": {...}}, ...]``) for a query batch, one per row, in order.

    ``rows``: a DataFrame or a dict of equal-length arrays with ``row_id`` (required) and
    optionally ``group``, ``score``, ``rank`` and other scalar columns (copied into ``data``).
    ``kind="image"`` takes the picture from, in this order: ``images`` (uint8 ``[n, H, W, C]``
    or ``[n, H, W]``), a column ``image`` (such an array; flat ``[n, H*W*C]`` pixels with
    ``image_shape``; or encoded PNG/JPEG bytes per row) — all inlined as ``data:image/...;base64``
    URIs, for small images — or a URI column (``uri_column``, default ``image_uri``) used as
    given (a local path under ``local_files_root`` becomes Label Studio's
    ``/data/local-files/?d=...``). ``kind="text"`` renders a ``features`` ``[n, D]`` column as
    ``"f0=..., f1=..."`` (or ``feature_names``), or takes a ``text`` column as it is.
    """
    tag_name = _check_kind(kind)[1]
    cols = _columns(rows)
    if "row_id" not in cols:
        raise ValueError(f"batch_to_tasks: no row_id column (columns: {sorted(cols)})")
    ids_raw = np.asarray(cols.pop("row_id"))
    if ids_raw.ndim != 1 or (len(ids_raw) and ids_raw.dtype.kind not in "iu"):
        raise ValueError("batch_to_tasks: row_id must be a 1-d integer column")
    row_ids = ids_raw.astype(np.int64)
    n = len(row_ids)
    uniq, counts = np.unique(row_ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"batch_to_tasks: repeated row_id {_ids(uniq[counts > 1].tolist())}")

    content: list[str]
    used = {"image", "features", "text"}
    if kind == "image":
        uri_col = uri_column or "image_uri"
        used.add(uri_col)
        pix = images if images is not None else cols.get("image")
        if pix is not None:
            content = _image_uris(pix, row_ids, image_shape)
        elif uri_col in cols:
            content = [_uri(v, int(r), local_files_root) for r, v in zip(row_ids, cols[uri_col],
                                                                         strict=True)]
        else:
            raise ValueError("batch_to_tasks: kind='image' needs images=, an 'image' column or "
                             f"a URI column ({uri_col!r}); columns: {sorted(cols)}")
    else:
        if "features" in cols:
            feats = cols["features"]
            content = [_feature_text(feats[i], feature_names, int(row_ids[i])) for i in range(n)]
        elif "text" in cols:
            content = [str(t) for t in cols["text"]]
        else:
            raise ValueError("batch_to_tasks: kind='text' needs a 'features' or 'text' column; "
                             f"columns: {sorted(cols)}")
    if len(content) != n:
        raise ValueError(f"batch_to_tasks: {len(content)} {kind}s for {n} rows")

    extra = {}
    for name, values in cols.items():
        if name in used:
            continue
        arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
        if arr.ndim != 1 or len(arr) != n:
            raise ValueError(f"batch_to_tasks: column {name!r} has shape {arr.shape}; "
                             f"expected {n} scalars")
        extra[name] = arr
    tasks = []
    for i in range(n):
        data: dict[str, Any] = {"row_id": int(row_ids[i])}
        for name, arr in extra.items():
            data[name] = _scalar(arr[i])
        data[tag_name] = content[i]
        tasks.append({"data": data})
    return tasks


def _image_uris(pix: Any, row_ids: np.ndarray, image_shape: Sequence[int] | None) -> list[str]:
    n = len(row_ids)
    if isinstance(pix, np.ndarray) and pix.dtype != object:
        arr = pix
        if arr.ndim == 2:  # flat pixels, as a pool's image column comes
            if image_shape is None:
                raise ValueError("batch_to_tasks: flat image pixels need image_shape=(H, W, C)")
            arr = arr.reshape((len(arr), *tuple(image_shape)))
        if len(arr) != n:
            raise ValueError(f"batch_to_tasks: {len(arr)} images for {n} rows")
        return [_png_data_uri(arr[i], int(row_ids[i])) for i in range(n)]
    values = list(pix)
    if len(values) != n:
        raise ValueError(f"batch_to_tasks: {len(values)} images for {n} rows")
    out = []
    for r, v in zip(row_ids.tolist(), values, strict=True):
        if isinstance(v, (bytes, bytearray, memoryview)):
            out.append(_bytes_data_uri(bytes(v), r))
        else:
            a = np.asarray(v)
            if a.ndim == 1 and image_shape is not None:
                a = a.reshape(tuple(image_shape))
            out.append(_png_data_uri(a, r))
    return out


def tasks_to_json(tasks: Sequence[Mapping]) -> str:
    """A task list as Label Studio imports it (*Import* → upload a ``.json`` file)."""
    return json.dumps(list(tasks), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


# ------------------------------------------------------------------------------------------
# export -> annotations
# ------------------------------------------------------------------------------------------


def _row_id(data: Any) -> int | None:
    if not isinstance(data, Mapping):
        return None
    v = data.get("row_id")
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
        return int(v)
    return None


def _annotator(completed_by: Any, users: Mapping[int, str] | None) -> str:
    if isinstance(completed_by, Mapping):
        for key in ("email", "username"):
            if completed_by.get(key):
                return str(completed_by[key])
        completed_by = completed_by.get("id")
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        if users and completed_by in users:
            return users[completed_by]
        return f"user-{completed_by}"
    return str(completed_by) if completed_by not in (None, "") else "unknown"


def parse_export(
    export: str | bytes | Sequence[Mapping],
    classes: Sequence[str],
    *,
    users: Mapping[int, str] | None = None,
) -> list[Annotation]:
    """The finished annotations of a Label Studio *JSON* export (a list of tasks, each with its
    ``data`` and ``annotations``), sorted by task id then annotation id.

    Cancelled (skipped) annotations and annotations without a choice are left out. An entry that
    cannot be read — no integer ``data.row_id``, a choice that is not one of ``classes``,
    several choices, an entry that is not a task — is an error: one :class:`ValueError` naming
    every such task id and row id, and nothing is returned. ``users`` maps Label Studio user ids
    to names where the export gives ``completed_by`` as an id.
    """
    names = _check_classes(classes)
    index = {n: i for i, n in enumerate(names)}
    if isinstance(export, (bytes, bytearray)):
        export = export.decode("utf-8")
    if isinstance(export, str):
        try:
            export = json.loads(export)
        except json.JSONDecodeError as exc:
            raise ValueError(f"label-studio export: not JSON ({exc})") from None
    if isinstance(export, Mapping):
        export = [export]  # a single task
    if not isinstance(export, Sequence) or isinstance(export, str):
        raise ValueError("label-studio export: expected a JSON list of tasks")

    out: list[Annotation] = []
    problems: list[str] = []
    for pos, task in enumerate(export):
        if not isinstance(task, Mapping):
            problems.append(f"entry {pos + 1} is not a task object")
            continue
        task_id = task.get("id")
        where = f"task {task_id}" if task_id is not None else f"entry {pos + 1}"
        if "annotations" not in task:
            if "data" in task or FROM_NAME in task:
                continue  # a task without annotations (or a JSON_MIN row, handled below)
            problems.append(f"{where}: no 'annotations' (export with the JSON format)")
            continue
        anns = task.get("annotations") or []
        if not isinstance(anns, list):
            problems.append(f"{where}: 'annotations' is not a list")
            continue
        row_id = _row_id(task.get("data"))
        for ann in anns:
            if not isinstance(ann, Mapping):
                problems.append(f"{where}: an annotation is not an object")
                continue
            if ann.get("was_cancelled"):
                continue
            chosen = _choices(ann.get("result"))
            if chosen is None:
                problems.append(f"{where}: annotation {ann.get('id')} has no result list")
                continue
            if not chosen:
                continue  # empty: nothing chosen
            at = f"{where} (row_id {row_id})" if row_id is not None else where
            if row_id is None:
                problems.append(f"{where}: no integer data.row_id "
                                f"(got {_short(_get(task.get('data'), 'row_id'))})")
                break
            if len(chosen) != 1:
                problems.append(f"{at}: annotation {ann.get('id')} chose {len(chosen)} "
                                f"classes {chosen}; one is expected")
                continue
            label = chosen[0]
            if label not in index:
                problems.append(f"{at}: unknown class {label!r} (classes: {', '.join(names)})")
                continue
            if not isinstance(task_id, int):
                problems.append(f"{at}: no integer task id")
                continue
            ann_id = ann.get("id") if isinstance(ann.get("id"), int) else None
            out.append(Annotation(
                row_id=row_id, label=index[label],
                annotator=_annotator(ann.get("completed_by"), users),
                created_at=str(ann.get("created_at") or ann.get("updated_at") or ""),
                task_id=task_id, annotation_id=ann_id))
    if problems:
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise ValueError(f"label-studio export: {len(problems)} unreadable entr"
                         f"{'y' if len(problems) == 1 else 'ies'}: "
                         + "; ".join(problems[:_SHOWN]) + more)
    out.sort(key=lambda a: (a.task_id, a.annotation_id if a.annotation_id is not None else -1))
    return out


def _get(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, Mapping) else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _choices(result: Any) -> list[str] | None:
    """The chosen class names of an annotation's result (``None``: not a result list)."""
    if result is None:
        return []
    if not isinstance(result, list):
        return None
    regions = [r for r in result if isinstance(r, Mapping) and r.get("type") == "choices"]
    ours = [r for r in regions if r.get("from_name") == FROM_NAME]
    chosen: list[str] = []
    # our control where the config is ours; any single-choice control of a hand-made project
    for region in ours or regions:
        value = region.get("value")
        picks = value.get("choices") if isinstance(value, Mapping) else None
        if isinstance(picks, list):
            chosen.extend(str(p) for p in picks)
    return chosen


def annotations_by_annotator(
    annotations: Iterable[Annotation],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{annotator: (row_ids, labels)}`` (int64, sorted by row id), one label per annotator and
    row: where one annotator annotated a row twice, the later annotation (created_at, then
    annotation id) counts. This is the shape of the ledger's ``add_annotations``."""
    latest: dict[tuple[str, int], Annotation] = {}
    for a in sorted(annotations, key=lambda a: (a.created_at, a.annotation_id or 0)):
        latest[(a.annotator, a.row_id)] = a
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for who in sorted({k[0] for k in latest}):
        rows = sorted((r, a.label) for (w, r), a in latest.items() if w == who)
        out[who] = (np.array([r for r, _ in rows], np.int64),
                    np.array([lab for _, lab in rows], np.int64))
    return out


def labels_for_rows(
    annotations: Iterable[Annotation], row_ids: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(row_ids, labels)`` of the requested rows that have an agreed label, in request order
    (an oracle's answer). A row whose annotators disagree is an error naming the rows; rows
    without a finished annotation are left out (not labelled yet)."""
    by_row: dict[int, set[int]] = {}
    for who_rows, labels in annotations_by_annotator(annotations).values():
        for r, lab in zip(who_rows.tolist(), labels.tolist(), strict=True):
            by_row.setdefault(r, set()).add(lab)
    requested = np.asarray(row_ids, np.int64)
    clash = sorted(r for r in set(requested.tolist()) if len(by_row.get(r, ())) > 1)
    if clash:
        shown = "; ".join(f"row_id {r}: labels {sorted(by_row[r])}" for r in clash[:_SHOWN])
        raise ValueError(f"label studio: annotators disagree on {len(clash)} row(s): {shown}")
    got = [r for r in requested.tolist() if r in by_row]
    return (np.array(got, np.int64),
            np.array([next(iter(by_row[r])) for r in got], np.int64))


# ------------------------------------------------------------------------------------------
# the client
# ------------------------------------------------------------------------------------------


def _looks_like_jwt(key: str) -> bool:
    parts = key.split(".")
    if len(parts) != 3 or not all(parts):
        return False
    try:
        head = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(head, dict) and "alg" in head


class LabelStudioClient:
    """A Label Studio server's REST API, as much of it as a campaign needs.

    ``api_key``: a personal access token (JWT refresh token) or a legacy token (see the module
    doc). Errors are one line naming the URL, the request and the server's answer:
    :class:`LabelStudioConnectionError` (a :class:`ConnectionError`) when the server cannot be
    reached or fails (5xx), :class:`LabelStudioAPIError` (a :class:`ValueError`) when it refuses.
    """

    def __init__(self, url: str, api_key: str, timeout: float = 30) -> None:
        import requests

        if not url or not re.match(r"^https?://", url):
            raise ValueError(f"label studio: url must start with http:// or https://, got {url!r}")
        if not api_key or not str(api_key).strip():
            raise ValueError(f"label studio {url}: empty API key")
        self.url = re.sub(r"^(https?://)[^/@]*@", r"\1", url.rstrip("/"))  # no user:pass@
        self._base = url.rstrip("/")
        self.timeout = timeout
        self._key = str(api_key).strip()
        self._jwt = _looks_like_jwt(self._key)
        self._access: str | None = None
        self._http = requests.Session()
        self._http.headers["Accept"] = "application/json"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def auth_scheme(self) -> str:
        """``"personal-access-token"`` (JWT, Bearer) or ``"legacy-token"`` (Token)."""
        return "personal-access-token" if self._jwt else "legacy-token"

    # -- HTTP ------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in (self._key, self._access):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _fail_unreachable(self, method: str, path: str, exc: Exception) -> None:
        reason = type(exc).__name__
        inner = str(exc)
        for hint in ("Connection refused", "Name or service not known", "timed out",
                     "No route to host", "Temporary failure in name resolution"):
            if hint in inner:
                reason += f" ({hint})"
                break
        raise LabelStudioConnectionError(
            f"label studio {self.url}: {method} {path} failed: cannot reach the server: "
            f"{reason}") from None

    def _refresh(self) -> None:
        import requests

        path = "/api/token/refresh/"
        try:
            resp = self._http.post(self._base + path, json={"refresh": self._key},
                                   timeout=self.timeout)
        except requests.RequestException as exc:
            self._fail_unreachable("POST", path, exc)
        if resp.status_code != 200:
            self._raise(resp, "POST", path, "exchanging the personal access token")
        access = resp.json().get("access") if _is_json(resp) else None
        if not access:
            raise LabelStudioAPIError(f"label studio {self.url}: POST {path}: no access token "
                                      "in the answer", resp.status_code)
        self._access = access

    def _auth(self) -> dict[str, str]:
        if not self._jwt:
            return {"Authorization": f"Token {self._key}"}
        if self._access is None:
            self._refresh()
        return {"Authorization": f"Bearer {self._access}"}

    def _request(self, method: str, path: str, *, what: str = "",
                 headers: Mapping[str, str] | None = None, **kwargs: Any):
        import requests

        for attempt in (0, 1):
            try:
                resp = self._http.request(method, self._base + path,
                                          headers={**(headers or {}), **self._auth()},
                                          timeout=self.timeout, **kwargs)
            except requests.RequestException as exc:
                self._fail_unreachable(method, path, exc)
            if resp.status_code == 401 and self._jwt and attempt == 0:
                self._access = None  # the access token expired: refresh once and retry
                continue
            if resp.status_code >= 400:
                self._raise(resp, method, path, what)
            return resp
        raise AssertionError("unreachable")

    def _raise(self, resp: Any, method: str, path: str, what: str) -> None:
        message = _server_message(resp)
        hint = ""
        if resp.status_code == 401 and "legacy token" in message.lower():
            hint = (" (legacy tokens are disabled: use a personal access token, or enable "
                    "legacy tokens in the organization's API token settings)")
        elif resp.status_code == 401:
            hint = " (check the API key)"
        doing = f" ({what})" if what else ""
        text = self._scrub(f"label studio {self.url}: {method} {path}{doing} failed: HTTP "
                           f"{resp.status_code}: {message}{hint}")
        if resp.status_code >= 500:
            raise LabelStudioConnectionError(text)
        raise LabelStudioAPIError(text, resp.status_code)

    def _json(self, resp: Any, method: str, path: str) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise LabelStudioAPIError(
                f"label studio {self.url}: {method} {path}: the answer is not JSON "
                f"(HTTP {resp.status_code}, {_short(resp.text[:80])})", resp.status_code) from None

    def _get_json(self, path: str, what: str = "", **params: Any) -> Any:
        resp = self._request("GET", path, what=what, params=params or None)
        return self._json(resp, "GET", path)

    # -- server ----------------------------------------------------------------------------

    def version(self) -> str:
        """The server's Label Studio version (``GET /api/version``)."""
        info = self._get_json("/api/version", "reading the version")
        release = info.get("release") if isinstance(info, Mapping) else None
        if not release and isinstance(info, Mapping):
            pkg = info.get("label-studio-os-package") or {}
            release = pkg.get("version") if isinstance(pkg, Mapping) else None
        return str(release or "unknown")

    def whoami(self) -> dict:
        """The user the key belongs to (``GET /api/current-user/whoami``)."""
        return self._get_json("/api/current-user/whoami", "checking the API key")

    def users(self) -> dict[int, str]:
        """``{user id: email or username}`` of the organization's users."""
        data = self._get_json("/api/users/", "listing users")
        items = data.get("results", []) if isinstance(data, Mapping) else data
        return {int(u["id"]): str(u.get("email") or u.get("username") or u["id"])
                for u in items if isinstance(u, Mapping) and "id" in u}

    # -- projects --------------------------------------------------------------------------

    def _projects_titled(self, title: str) -> list[dict]:
        found, page = [], 1
        while True:
            data = self._get_json("/api/projects/", "finding the project", title=title,
                                  page=page, page_size=_PAGE)
            items = data.get("results", []) if isinstance(data, Mapping) else data
            found += [p for p in items if isinstance(p, Mapping) and p.get("title") == title]
            if not isinstance(data, Mapping) or not data.get("next") or not items:
                return found
            page += 1

    def ensure_project(self, title: str, classes: Sequence[str], *, kind: str) -> int:
        """The id of the project titled exactly ``title``, created if there is none, with a
        single-choice labelling config over ``classes``. An existing project whose config has
        other classes (or order) or another object kind is an error, never silently reused."""
        if not 3 <= len(title.strip()) <= 50:
            raise ValueError(f"label studio: project title {title!r} must have 3 to 50 "
                             "characters")
        config = label_config(classes, kind=kind)
        names = _check_classes(classes)
        found = self._projects_titled(title)
        if len(found) > 1:
            raise LabelStudioAPIError(
                f"label studio {self.url}: {len(found)} projects are titled {title!r} (ids "
                f"{_ids(sorted(p['id'] for p in found))}); rename all but one", 409)
        if found:
            pid = int(found[0]["id"])
            config_now = found[0].get("label_config")
            if config_now is None:
                config_now = self._get_json(f"/api/projects/{pid}/", "reading the project"
                                            ).get("label_config", "")
            have, have_kind = _config_classes(config_now or "")
            if have != names or have_kind != kind:
                raise ValueError(
                    f"label studio {self.url}: project {pid} {title!r} labels {_kind_or(have_kind)}"
                    f" with classes {have}; this campaign needs {kind} with classes {names}")
            return pid
        resp = self._request("POST", "/api/projects/", what="creating the project", json={
            "title": title, "label_config": config,
            "description": "Active-learning queries from rayfal: one task per pool row "
                           "(data.row_id); choose the row's class."})
        return int(self._json(resp, "POST", "/api/projects/")["id"])

    def project_url(self, project_id: int) -> str:
        """Where people label the project in a browser."""
        return f"{self.url}/projects/{int(project_id)}/data"

    # -- tasks -----------------------------------------------------------------------------

    def tasks(self, project_id: int, *, with_annotations: bool = False) -> list[dict]:
        """The project's tasks (``id``, ``data`` and, ``with_annotations``, ``annotations``),
        paged through ``GET /api/tasks/``: the shape of a JSON export, for :func:`parse_export`.
        (The export endpoint itself is not used: it leaves a file on the server per call.)"""
        path = "/api/tasks/"
        out: list[dict] = []
        page = 1
        while True:
            params = {"project": int(project_id), "page": page, "page_size": _PAGE,
                      "resolve_uri": "false"}
            if with_annotations:
                params["fields"] = "all"
            data = self._get_json(path, f"listing the tasks of project {project_id}", **params)
            items = data.get("tasks") if isinstance(data, Mapping) else data
            if not isinstance(items, list):
                raise LabelStudioAPIError(f"label studio {self.url}: GET {path}: expected a "
                                          "list of tasks", 200)
            out += [t for t in items if isinstance(t, Mapping)]
            total = data.get("total") if isinstance(data, Mapping) else None
            if not items or not isinstance(total, int) or len(out) >= total:
                return out
            page += 1

    def task_ids(self, project_id: int) -> dict[int, int]:
        """``{row_id: task id}`` of the project's tasks that carry a ``data.row_id``."""
        out: dict[int, int] = {}
        for task in self.tasks(project_id):
            r = _row_id(task.get("data"))
            if r is not None and isinstance(task.get("id"), int):
                out.setdefault(r, task["id"])
        return out

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping]) -> list[int]:
        """Import ``tasks`` (from :func:`batch_to_tasks`) into the project; tasks whose
        ``data.row_id`` is already there are skipped, so importing a batch again adds nothing.
        Returns the task ids of ``tasks``, in order (existing tasks' ids for skipped rows)."""
        rows = []
        for pos, t in enumerate(tasks):
            r = _row_id(t.get("data") if isinstance(t, Mapping) else None)
            if r is None:
                raise ValueError(f"label studio: task {pos + 1} to import has no integer "
                                 "data.row_id")
            rows.append(r)
        dup = sorted({r for r in rows if rows.count(r) > 1})
        if dup:
            raise ValueError(f"label studio: repeated row_id {_ids(dup)} in the tasks to import")
        have = self.task_ids(project_id)
        new = [t for t, r in zip(tasks, rows, strict=True) if r not in have]
        if new:
            try:
                body = json.dumps(list(new), allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise ValueError(f"label studio: the tasks to import are not plain JSON "
                                 f"({exc}); build them with batch_to_tasks") from None
            path = f"/api/projects/{int(project_id)}/import"
            resp = self._request("POST", path, what=f"importing {len(new)} tasks",
                                 params={"return_task_ids": "true"}, data=body,
                                 headers={"Content-Type": "application/json"})
            info = self._json(resp, "POST", path)
            got = info.get("task_ids") if isinstance(info, Mapping) else None
            if isinstance(got, list) and len(got) == len(new):
                have.update({_row_id(t["data"]): int(i) for t, i in zip(new, got, strict=True)})
            else:  # asynchronous import (Enterprise) or an older server: look them up
                have = self._wait_for_rows(project_id, rows)
        return [have[r] for r in rows]

    def _wait_for_rows(self, project_id: int, rows: Sequence[int]) -> dict[int, int]:
        deadline = time.monotonic() + self.timeout
        while True:
            have = self.task_ids(project_id)
            missing = [r for r in rows if r not in have]
            if not missing:
                return have
            if time.monotonic() > deadline:
                raise LabelStudioConnectionError(
                    f"label studio {self.url}: project {project_id}: imported tasks for row_id "
                    f"{_ids(missing)} did not appear within {self.timeout:g} s")
            time.sleep(1.0)

    def annotations(self, project_id: int, classes: Sequence[str]) -> list[Annotation]:
        """The project's finished annotations (see :func:`parse_export`), annotators named by
        email where the key may list the organization's users."""
        export = [t for t in self.tasks(project_id, with_annotations=True)
                  if t.get("annotations")]
        try:
            users = self.users()
        except LabelStudioAPIError:
            users = {}
        try:
            return parse_export(export, classes, users=users)
        except ValueError as exc:
            raise ValueError(f"label studio {self.url}: project {project_id}: {exc}") from None


def _kind_or(kind: str | None) -> str:
    return kind or "an unknown object"


def _is_json(resp: Any) -> bool:
    return "json" in resp.headers.get("Content-Type", "")


def _server_message(resp: Any) -> str:
    """The server's error message, on one line, shortened."""
    text = ""
    if _is_json(resp):
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, Mapping):
            parts = [str(body[k]) for k in ("detail", "validation_errors", "message", "errors")
                     if body.get(k)]
            text = "; ".join(parts) if parts else json.dumps(body)
        elif body is not None:
            text = json.dumps(body)
    if not text:
        text = resp.text or resp.reason or ""
        if "<html" in text.lower():
            title = re.search(r"<title>(.*?)</title>", text, re.S | re.I)
            text = title.group(1).strip() if title else (resp.reason or "HTML page")
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."
