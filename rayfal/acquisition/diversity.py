"""Whole-pool diversity selection: coreset k-center greedy and BADGE (pure numpy).

* :func:`kcenter_greedy` — the coreset strategy of Sener & Savarese (ICLR 2018, Algorithm 1,
  "k-Center-Greedy"): repeatedly add the point farthest (Euclidean, in the embedding space)
  from its nearest center, the centers being the labelled points and the picks so far. A
  2-approximation of the minimax facility-location (k-center) problem.
* :func:`badge_select` — BADGE of Ash et al. (ICLR 2020, Algorithm 1): hallucinated-label
  gradient embeddings of the last layer ``g_x = (p(x) - onehot(argmax p(x))) ⊗ h(x)`` (the
  gradient of the cross-entropy at the predicted label w.r.t. the last linear layer's weights,
  ``h`` its input), then k-means++ seeding (Arthur & Vassilvitskii 2007): the first center is
  the point of largest ``||g||`` (as in the authors' code), every next one is sampled with
  probability proportional to ``D(x)^2``, the squared distance to the nearest center so far.

Both stream the pool in row chunks and keep O(N) floats of state: ``embeddings`` may be a
``np.memmap``. ``g`` is never materialised on the factorised path: with ``r = p - onehot``,
``||g||^2 = ||r||^2 ||h||^2`` and ``<g_a, g_b> = <r_a, r_b> <h_a, h_b>``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["badge_embeddings", "badge_select", "kcenter_greedy"]


def _rows(a: ArrayLike, name: str) -> np.ndarray:
    arr = a if isinstance(a, np.ndarray) else np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def _chunk(arr: np.ndarray, start: int, size: int, name: str) -> np.ndarray:
    block = np.asarray(arr[start : start + size], dtype=np.float64)
    if not np.all(np.isfinite(block)):
        bad = start + np.flatnonzero(~np.isfinite(block).all(axis=1))[:10]
        raise ValueError(f"{name} has NaN/inf in rows {bad.tolist()}")
    return block


# --------------------------------------------------------------------------- k-center greedy


def kcenter_greedy(
    embeddings: ArrayLike,
    labelled: ArrayLike | None,
    budget: int,
    *,
    chunk_size: int = 8192,
    seed: int = 0,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Greedy farthest-first k-center selection (Sener & Savarese 2018, Algorithm 1).

    ``embeddings`` ``[N, D]`` is the unlabelled pool (or the whole pool with ``labelled`` a
    boolean mask ``[N]`` of rows that are already labelled); ``labelled`` may instead be the
    labelled set's embeddings ``[L, D]`` or ``None``. Picks ``min(budget, selectable rows)``
    row positions, each ``argmax_i min_{c in centers} ||x_i - c||`` (ties: lowest index). With
    no labelled data the first center is a uniform random row (``seed``).

    Memory: ``min_d2`` (float64, ``N``) + a selectable mask (``N`` bytes) + one chunk
    (``chunk_size * D`` float64, plus ``chunk_size * L`` for the initial distances to ``L``
    labelled embeddings) + the labelled embeddings gathered from a mask. For ``N = 10^6``,
    ``D = 512``, the default chunk: 8 MB + 1 MB + 32 MB, independent of ``budget`` except the
    ``budget`` output indices; never ``O(N^2)``. Time ``O((L + budget) N D)``.

    With ``return_info``: also ``{"pick_distances": [b] (distance of each pick to its nearest
    center when picked), "radius": covering radius of the final centers over the non-center
    rows (0.0 if none)}``.
    """
    x = _rows(embeddings, "embeddings")
    n, d = x.shape
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    min_d2 = np.full(n, np.inf)
    selectable = np.ones(n, dtype=bool)
    centers = None
    if labelled is not None:
        lab = np.asarray(labelled)
        if lab.ndim == 1:
            if lab.dtype != bool or lab.shape != (n,):
                raise ValueError(f"labelled mask must be bool [{n}], got {lab.dtype} {lab.shape}")
            selectable &= ~lab
            centers = np.asarray(x[np.flatnonzero(lab)], dtype=np.float64)
        else:
            centers = _rows(lab, "labelled embeddings").astype(np.float64)
            if centers.shape[1] != d:
                raise ValueError(f"labelled embeddings have D={centers.shape[1]}, pool D={d}")
    if centers is not None and len(centers):
        c_norm = (centers**2).sum(1)
        for s in range(0, n, chunk_size):
            xc = _chunk(x, s, chunk_size, "embeddings")
            d2 = (xc**2).sum(1)[:, None] + c_norm[None, :] - 2.0 * (xc @ centers.T)
            min_d2[s : s + len(xc)] = np.maximum(d2, 0.0).min(axis=1)

    def add_center(c: np.ndarray) -> None:
        for s in range(0, n, chunk_size):
            xc = _chunk(x, s, chunk_size, "embeddings")
            np.minimum(min_d2[s : s + len(xc)], ((xc - c) ** 2).sum(1), out=min_d2[s : s + len(xc)])

    budget = min(budget, int(selectable.sum()))
    picks: list[int] = []
    dists: list[float] = []
    for t in range(budget):
        if t == 0 and (centers is None or len(centers) == 0):
            idx = int(np.random.default_rng(seed).choice(np.flatnonzero(selectable)))
            dists.append(float("inf"))
        else:
            idx = int(np.argmax(np.where(selectable, min_d2, -np.inf)))
            dists.append(float(np.sqrt(min_d2[idx])))
        picks.append(idx)
        selectable[idx] = False
        add_center(np.asarray(x[idx], dtype=np.float64))
    out = np.asarray(picks, dtype=np.int64)
    if not return_info:
        return out
    # rows that are neither labelled nor picked; with labelled embeddings every row is a client
    # (inf when there is no center at all: budget 0 and nothing labelled)
    radius = float(np.sqrt(min_d2[selectable].max())) if selectable.any() else 0.0
    return out, {"pick_distances": np.asarray(dists), "radius": radius}


# --------------------------------------------------------------------------- BADGE


def _residual(p: np.ndarray) -> np.ndarray:
    """``p - onehot(argmax p)`` (first max on ties) for a chunk ``[n, C]``."""
    r = p.copy()
    r[np.arange(len(p)), np.argmax(p, axis=1)] -= 1.0
    return r


def badge_embeddings(probs: ArrayLike, embeddings: ArrayLike) -> np.ndarray:
    """Explicit BADGE gradient embeddings ``[N, C * D]``: row ``x`` is the flattened outer
    product ``(p(x) - onehot(argmax p(x))) ⊗ h(x)`` (class-major). Only for small ``N``; use
    :func:`badge_select` with ``probs``/``embeddings`` to avoid materialising it."""
    p = _rows(probs, "probs").astype(np.float64)
    h = _rows(embeddings, "embeddings").astype(np.float64)
    if len(p) != len(h):
        raise ValueError(f"probs has {len(p)} rows, embeddings {len(h)}")
    return (_residual(p)[:, :, None] * h[:, None, :]).reshape(len(p), -1)


def badge_select(
    grad_embeddings: ArrayLike | None = None,
    *,
    probs: ArrayLike | None = None,
    embeddings: ArrayLike | None = None,
    budget: int,
    seed: int,
    chunk_size: int = 65536,
) -> np.ndarray:
    """BADGE (Ash et al. 2020): k-means++ seeding on gradient embeddings; ``budget`` positions.

    Give either explicit ``grad_embeddings`` ``[N, E]`` or ``probs`` ``[N, C]`` (or MC samples
    ``[N, C, T]``, averaged) with the last layer's input ``embeddings`` ``[N, D]`` (factorised;
    ``g`` is never materialised). First pick: ``argmax ||g||`` (lowest index on ties); next:
    sampled with probability ``D(x)^2 / sum D^2`` (``D`` = distance to the nearest pick so far),
    by inverse CDF with one ``rng.random()`` per pick (``rng = default_rng(seed)``). If every
    unpicked point has ``D = 0`` (duplicates), the next pick is uniform among unpicked ones.

    Memory (factorised, ``N = 10^6``, ``C = 10``, ``D = 512``): ``min_d2``, ``||g||^2`` and the
    CDF, 3 x 8 MB float64, plus the inputs (``N (C + D)`` floats, may be memmaps) and one chunk
    of ``chunk_size (C + D)`` floats; the explicit ``g`` would be ``N C D`` = 5.1e9 floats
    (20 GB in float32). Explicit path: the ``N E`` input plus the same ``O(N)`` state. Time
    ``O(budget N (C + D))``.
    """
    rng = np.random.default_rng(seed)
    if grad_embeddings is not None:
        if probs is not None or embeddings is not None:
            raise ValueError("give grad_embeddings or (probs, embeddings), not both")
        g = _rows(grad_embeddings, "grad_embeddings")
        n = len(g)

        def sq_norms() -> np.ndarray:
            return np.concatenate([(_chunk(g, s, chunk_size, "grad_embeddings") ** 2).sum(1)
                                   for s in range(0, n, chunk_size)]) if n else np.zeros(0)

        def dist2_to(i: int) -> np.ndarray:
            c = np.asarray(g[i], dtype=np.float64)
            return np.concatenate([((_chunk(g, s, chunk_size, "grad_embeddings") - c) ** 2).sum(1)
                                   for s in range(0, n, chunk_size)])
    else:
        if probs is None or embeddings is None:
            raise ValueError("badge_select needs grad_embeddings or both probs and embeddings")
        p_arr = np.asarray(probs) if not isinstance(probs, np.ndarray) else probs
        if p_arr.ndim == 3:
            p_arr = p_arr.mean(axis=2)
        p_arr = _rows(p_arr, "probs")
        h = _rows(embeddings, "embeddings")
        n = len(p_arr)
        if len(h) != n:
            raise ValueError(f"probs has {n} rows, embeddings {len(h)}")

        def parts(s: int) -> tuple[np.ndarray, np.ndarray]:
            return _residual(_chunk(p_arr, s, chunk_size, "probs")), _chunk(h, s, chunk_size,
                                                                             "embeddings")

        def sq_norms() -> np.ndarray:
            out = []
            for s in range(0, n, chunk_size):
                r, hc = parts(s)
                out.append((r**2).sum(1) * (hc**2).sum(1))
            return np.concatenate(out) if out else np.zeros(0)

        def dist2_to(i: int) -> np.ndarray:
            r_c, h_c = _residual(np.asarray(p_arr[i : i + 1], dtype=np.float64))[0], np.asarray(
                h[i], dtype=np.float64)
            norm_c = float((r_c**2).sum() * (h_c**2).sum())
            out = []
            for s in range(0, n, chunk_size):
                r, hc = parts(s)
                d2 = (r**2).sum(1) * (hc**2).sum(1) + norm_c - 2.0 * (r @ r_c) * (hc @ h_c)
                out.append(np.maximum(d2, 0.0))
            return np.concatenate(out)

    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    budget = min(budget, n)
    if budget == 0:
        return np.zeros(0, np.int64)
    chosen = np.zeros(n, dtype=bool)
    first = int(np.argmax(sq_norms()))
    picks = [first]
    chosen[first] = True
    min_d2 = dist2_to(first)
    min_d2[chosen] = 0.0
    while len(picks) < budget:
        total = float(min_d2.sum())
        if total > 0.0:
            cdf = np.cumsum(min_d2)
            u = rng.random() * cdf[-1]
            idx = int(np.searchsorted(cdf, u, side="right"))  # never a zero-weight row
            if idx >= n:  # u rounded up to the total: the last row with positive weight
                idx = int(np.flatnonzero(min_d2 > 0)[-1])
        else:
            idx = int(rng.choice(np.flatnonzero(~chosen)))
        picks.append(idx)
        chosen[idx] = True
        np.minimum(min_d2, dist2_to(idx), out=min_d2)
        min_d2[chosen] = 0.0
    return np.asarray(picks, dtype=np.int64)
