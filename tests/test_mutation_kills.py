"""Known answers added to kill the mutants that survived ``make mutation`` (see TESTING.md):
each test names what it pins down. Pure numpy / torch on hand-made arrays; no Ray."""

from __future__ import annotations

import numpy as np
import pytest

from rayfal.acquisition import scores

# ----------------------------------------------------------------------------- scores


def test_zero_mc_samples_is_refused() -> None:
    """``[N, C, 0]`` has no samples: an error, not a NaN mean."""
    with pytest.raises(ValueError, match=r"T >= 1"):
        scores.bald(np.zeros((2, 3, 0)))
    with pytest.raises(ValueError, match=r"C >= 1"):
        scores.entropy(np.zeros((2, 0)))


def test_margin_is_the_gap_between_the_two_largest_whatever_their_positions() -> None:
    """Negated top-1 minus top-2 gap, checked against a full sort on rows whose two largest
    classes sit anywhere (a partial partition would leave them unordered)."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(6), size=200)
    srt = np.sort(p, axis=1)
    np.testing.assert_allclose(scores.margin(p), -(srt[:, -1] - srt[:, -2]), atol=1e-15)
    assert np.all(scores.margin(p) <= 0)
    np.testing.assert_allclose(scores.margin(np.array([[0.1, 0.5, 0.4]])), [-0.1], atol=1e-12)


# ----------------------------------------------------------------------------- evaluation


def _dropout_mlp():
    import torch

    from rayfal.models import build_model

    torch.manual_seed(0)
    return build_model("mlp", (5,), 3, hidden=16, dropout=0.5).eval()


def test_evaluate_model_is_evaluate_probs_of_the_row_keyed_mc_probs() -> None:
    """``evaluate_model`` = ``evaluate_probs(mc_probs(...))`` with *its* samples, seed (0 by
    default) and row keys (each changes the MC masks, so each must reach ``mc_probs``); y and
    group may be lists."""
    import torch

    from rayfal.evaluation import evaluate_model, evaluate_probs
    from rayfal.models.predict import mc_probs

    model = _dropout_mlp()
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(1))
    y = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]
    group = [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1]
    keys = np.arange(12, dtype=np.int64) * 7 + 3
    got = evaluate_model(model, x, y, group, mc_samples=4, batch_size=5, seed=7, row_keys=keys)
    probs = mc_probs(model, x, mc_samples=4, batch_size=5, generator_seed=7, row_keys=keys)
    want = evaluate_probs(probs, np.asarray(y), np.asarray(group))
    assert got == pytest.approx(want, abs=1e-12)
    assert got["bald_group_0"] > 0 and got["bald_group_1"] > 0  # dropout is on: T samples differ
    # the seed, the row keys and the number of samples each change the result
    zero = evaluate_model(model, x, y, group, mc_samples=4, batch_size=5, seed=0, row_keys=keys)
    assert evaluate_model(model, x, y, group, mc_samples=4, batch_size=5, row_keys=keys) == zero
    for other in (dict(seed=8, row_keys=keys, mc_samples=4),
                  dict(seed=7, row_keys=keys + 1, mc_samples=4),
                  dict(seed=7, row_keys=keys, mc_samples=3)):
        assert evaluate_model(model, x, y, group, batch_size=5, **other) != got
    # row-keyed masks: the batch size changes nothing
    assert evaluate_model(model, x, y, group, mc_samples=4, seed=7, row_keys=keys) == \
        pytest.approx(got, abs=1e-9)


def test_evaluate_probs_nll_is_finite_when_the_true_class_has_probability_zero() -> None:
    """The true class' probability is clipped at 1e-12 before the log: a sure, wrong model
    has a large but finite NLL (-log 1e-12 per such row), not inf."""
    from rayfal.evaluation import evaluate_probs

    probs = np.array([[[1.0], [0.0]], [[0.5], [0.5]]])  # [N=2, C=2, T=1]
    out = evaluate_probs(probs, np.array([1, 0]), np.array([0, 1]))
    assert out["nll"] == pytest.approx((-np.log(1e-12) - np.log(0.5)) / 2, rel=1e-12)


def _linear(seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()


def test_evaluate_robust_default_seed_is_0_and_labels_may_be_int32() -> None:
    """The random starts are keyed by (seed, row key) with seed 0 by default: the default equals
    seed=0 and differs from seed=1 (steps=0: the start alone moves the rows); labels and keys
    of another integer dtype are cast to int64 (a torch loss refuses int32 targets)."""
    import torch

    from rayfal.attacks import AttackSpec
    from rayfal.evaluation import evaluate_robust

    model = _linear()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(400, 4, generator=gen) * 0.3
    with torch.no_grad():
        y = model(x).argmax(1).numpy()
    group = np.arange(400) % 2
    keys = np.arange(400, dtype=np.int64)
    start_only = AttackSpec(eps=0.5, steps=0, clamp=None)
    default = evaluate_robust(model, x, y, group, attack=start_only, row_keys=keys)
    assert default == evaluate_robust(model, x, y, group, attack=start_only, row_keys=keys,
                                      seed=0)
    assert default != evaluate_robust(model, x, y, group, attack=start_only, row_keys=keys,
                                      seed=1)
    assert default["F_std"] == 1.0 and default["robust_accuracy"] < 0.95
    pgd = AttackSpec(eps=0.2, alpha=0.05, steps=3, clamp=None)
    want = evaluate_robust(model, x, y, group, attack=pgd, row_keys=keys)
    got = evaluate_robust(model, x, y.astype(np.int32), group, attack=pgd,
                          row_keys=keys.astype(np.int32))
    assert got == want


# ----------------------------------------------------------------------------- JIN


def test_running_moments_merge_with_one_value_and_with_nothing() -> None:
    """Chan's merge against the moments of the union, including a one-value side (not an
    'empty' one) and an empty side (returned unchanged, every field)."""
    from rayfal.acquisition.jin import RunningMoments

    a, one = RunningMoments.of([1.0, 2.0, 4.0]), RunningMoments.of([10.0])
    for merged in (a.combine(one), one.combine(a), a + one):
        want = RunningMoments.of([1.0, 2.0, 4.0, 10.0])
        assert merged.count == want.count
        assert merged.mean == pytest.approx(want.mean, rel=1e-15)
        assert merged.m2 == pytest.approx(want.m2, rel=1e-12)
    for merged in (a.combine(RunningMoments()), RunningMoments().combine(a)):
        assert (merged.count, merged.mean, merged.m2) == (a.count, a.mean, a.m2)
        assert merged is not a


def test_jin_terms_compute_in_float64() -> None:
    """float32 stacked probabilities give the float64 terms (cast first)."""
    from rayfal.acquisition.jin import jin_terms

    rng = np.random.default_rng(0)
    stacked = rng.dirichlet(np.ones(4), size=(50, 3)).transpose(0, 2, 1)  # [N, C, 3]
    s32 = stacked.astype(np.float32)
    got = jin_terms(s32)
    want = jin_terms(s32.astype(np.float64))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float64
        np.testing.assert_array_equal(g, w)


# ----------------------------------------------------------------------------- row-keyed masks


def test_each_dropout_layer_draws_its_own_masks() -> None:
    """``RowKeyedMasks`` counts the dropout layers it serves: layer 0, 1, 2, ... each get their
    own draw (two layers of the same width never share a mask), and the same layer index under
    a fresh object gives the same draw."""
    import torch

    from rayfal.models.mc_dropout import MCDropout
    from rayfal.models.predict import RowKeyedMasks

    keys = np.array([3, 700, 1029], dtype=np.int64)
    drop = MCDropout(0.5)
    x = torch.ones(2 * len(keys), 64)
    masks = RowKeyedMasks(keys, mc_samples=2, seed=5)
    layers = [masks(drop, x) for _ in range(3)]
    assert masks.layer == 3
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.equal(layers[i], layers[j]), (i, j)
    again = RowKeyedMasks(keys, mc_samples=2, seed=5)
    assert [torch.equal(again(drop, x), m) for m in layers] == [True, True, True]


def test_row_keyed_masks_take_the_activations_dtype_and_any_integer_keys() -> None:
    """A float64 model gets float64 masks (kept entries exactly ``1 / (1 - p)`` in float64, not
    a float32-rounded scale) with the same draws as float32; row keys of any integer dtype
    (int32, uint32, uint64, a list) give the same masks as int64 keys."""
    import torch

    from rayfal.models.mc_dropout import MCDropout
    from rayfal.models.predict import RowKeyedMasks

    keys = np.array([3, 700, 1029, 12], dtype=np.int64)
    drop = MCDropout(0.3)
    x32 = torch.ones(2 * len(keys), 16)
    ref = RowKeyedMasks(keys, mc_samples=2, seed=5)(drop, x32)
    assert ref.dtype == torch.float32
    m64 = RowKeyedMasks(keys, mc_samples=2, seed=5)(drop, x32.double())
    assert m64.dtype == torch.float64
    kept = m64 != 0
    assert torch.equal(kept, ref != 0) and 0 < int(kept.sum()) < kept.numel()
    assert torch.all(m64[kept] == 1.0 / (1.0 - 0.3))
    for other in (keys.astype(np.int32), keys.astype(np.uint32), keys.astype(np.uint64),
                  keys.tolist()):
        assert torch.equal(RowKeyedMasks(other, mc_samples=2, seed=5)(drop, x32), ref)


def test_jin_strategy_keeps_its_attack_round_and_merged_moments() -> None:
    """What the JIN strategy hands to its Ray scorers: the attack as a dict with exactly these
    keys, its round (0 by default) and the merged moments of pass 1 (when resumed)."""
    from rayfal.acquisition import make_strategy
    from rayfal.acquisition.jin import RunningMoments

    s = make_strategy("jin", seed=3, eps=0.1, alpha=0.02, steps=4, attack_loss="ce")
    assert s.attack == {"eps": 0.1, "alpha": 0.02, "steps": 4, "loss": "ce"}
    assert s.round == 0 and s.moments == {"std": None, "rob": None}
    assert make_strategy("jin", seed=3, round=2).round == 2
    m_std, m_rob = RunningMoments.of([1.0, 2.0]), RunningMoments.of([5.0, 9.0, 1.0])
    r = make_strategy("jin", seed=3, moments_std=m_std.to_dict(), moments_rob=m_rob.to_dict())
    assert r.moments["std"] == m_std and r.moments["rob"] == m_rob


# ----------------------------------------------------------------------------- candidate reducer


def test_candidate_reducer_outputs_int64_ids_and_float64_scores_even_when_empty() -> None:
    """The candidates' dtypes do not depend on the inputs' (int32 ids, float32 scores) or on
    whether any row came in."""
    from rayfal.acquisition import make_strategy
    from rayfal.acquisition.base import CandidateReducer

    strat = make_strategy("entropy", seed=0)
    empty = CandidateReducer(strat, 3).result()
    assert empty.row_id.dtype == empty.group.dtype == np.int64
    assert empty.score.dtype == empty.tiebreak.dtype == np.float64
    red = CandidateReducer(strat, 2)
    red.add(np.array([5, 9, 2], np.int32), np.array([0, 1, 0], np.int32),
            np.array([0.5, 0.25, 0.75], np.float32))
    got = red.result()
    assert got.row_id.dtype == got.group.dtype == np.int64 and got.score.dtype == np.float64
    assert sorted(got.row_id.tolist()) == [2, 5, 9] and got.group_counts == {0: 2, 1: 1}


# ----------------------------------------------------------------------------- fairness metrics


def test_panda_equalized_odds_with_only_positives_or_only_negatives() -> None:
    """A label set with one class has only one defined ``(a, y)`` family: only TPRs (all
    positives) or only FPRs (all negatives). The missing class is skipped, the other still
    counts: group TPRs 1 and 1/2 around the pooled 3/4 give 1/4 (likewise for the FPRs)."""
    from rayfal.fairness.metrics import panda_equalized_odds

    groups = np.array([0, 0, 1, 1])
    assert panda_equalized_odds(np.ones(4), np.array([1, 1, 1, 0]), groups=groups) == 0.25
    assert panda_equalized_odds(np.zeros(4), np.array([1, 0, 0, 0]), groups=groups) == 0.25
    assert panda_equalized_odds(np.ones(4), np.ones(4), groups=groups) == 0.0


def test_fairness_report_omits_binary_metrics_when_either_side_is_multiclass() -> None:
    """Binary metrics need *both* ``y_true`` and ``y_pred`` in {0, 1}: a 3-class model that
    predicts class 2 on rows whose true labels happen to be 0/1 (or the reverse) gets the
    accuracy metrics only, not a ValueError."""
    from rayfal.fairness.metrics import fairness_report

    groups = np.array([0, 0, 1, 1])
    for y_true, y_pred in (([0, 1, 1, 0], [0, 2, 1, 0]), ([0, 2, 1, 0], [0, 1, 1, 0])):
        rep = fairness_report(np.array(y_true), np.array(y_pred), groups=groups)
        assert "demographic_parity_difference" not in rep
        assert "equalized_odds_difference" not in rep
        assert rep["accuracy"] == 0.75 and rep["acc_group_0"] == 0.5 and rep["acc_group_1"] == 1.0


def test_object_dtype_columns_are_read_by_value() -> None:
    """Object arrays (what ``np.asarray`` makes of a pandas object column) are judged by their
    values: 0/1 objects are binary, string objects are group names, and a float NaN among
    them is the documented ``ValueError``, not a ``TypeError``."""
    from rayfal.fairness.metrics import accuracy_by_group, demographic_parity_difference

    groups = np.array(["f", "f", "m", "m"], dtype=object)
    y_pred = np.array([1, 1, 1, 0], dtype=object)
    assert demographic_parity_difference(y_pred, groups=groups) == 0.5
    assert accuracy_by_group(np.array([1, 0, 1, 0], dtype=object), y_pred, groups=groups) == \
        {"f": 0.5, "m": 1.0}
    with pytest.raises(ValueError, match="y_true contains NaN/None"):
        accuracy_by_group(np.array([0, 1, np.nan, 1], dtype=object), y_pred, groups=groups)


def test_non_binary_values_are_named_sorted_or_in_first_seen_order_when_mixed() -> None:
    """Numeric non-binary values are listed sorted and once; mixed-type object values (which
    cannot be sorted) in first-seen order, still as the documented ``ValueError``."""
    from rayfal.fairness.metrics import demographic_parity_difference

    with pytest.raises(ValueError, match=r"non-binary values \[2, 3\]$"):
        demographic_parity_difference([3, 2, 0, 2, 1], groups=[0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match=r"non-binary values \['x', 5\]$"):
        demographic_parity_difference(np.array([0, "x", 5, "x"], dtype=object),
                                      groups=[0, 0, 1, 1])


def test_ledger_annotations_default_source_is_human_and_object_ids_are_read(tmp_path) -> None:
    """Two ledger survivors: an annotation without ``source`` is recorded as ``human``, and
    row ids / labels given as an object array (e.g. a pandas object column of Python ints)
    are read by value."""
    from rayfal.data.ledger import LabelLedger

    ledger = LabelLedger(tmp_path / "ledger.sqlite")
    ids = np.array([3, 5], dtype=object)
    n = ledger.add_annotations(ids, np.array([1, 0], dtype=object), annotator="ann", round=0)
    assert n == 2
    frame = ledger.annotations_frame()
    assert frame["source"].tolist() == ["human", "human"]
    assert frame["row_id"].tolist() == [3, 5] and frame["label"].tolist() == [1, 0]
