"""The paired bootstrap: hand-checkable cases and a direct numpy recomputation."""

import numpy as np
import pytest

from unlearn.report.stats import bootstrap, paired_bootstrap


def test_all_equal_scores_give_a_zero_width_interval():
    iv = bootstrap([1.0] * 7, seed=3)
    assert (iv.mean, iv.low, iv.high) == (1.0, 1.0, 1.0)


def test_a_known_vector_matches_a_direct_numpy_computation():
    scores = [0.0, 1.0, 1.0, 0.0, 1.0]
    iv = bootstrap(scores, resamples=1000, seed=7)
    index = np.random.default_rng(7).integers(0, 5, size=(1000, 5))
    means = np.asarray(scores)[index].mean(axis=1)
    assert iv.mean == pytest.approx(0.6)
    assert (iv.low, iv.high) == (np.quantile(means, 0.025), np.quantile(means, 0.975))
    # five items: every resampled mean is a multiple of 1/5
    assert iv.low * 5 == pytest.approx(round(iv.low * 5))


def test_pairing_resamples_the_same_items_for_both_models():
    base = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    shifted = [b + 0.25 for b in base]   # every item exactly 0.25 higher
    p = paired_bootstrap(base, shifted, seed=0)
    assert (p.delta.mean, p.delta.low, p.delta.high) == pytest.approx((0.25, 0.25, 0.25))
    assert p.base.high - p.base.low > 0.4      # each model alone: a wide interval
    assert p.unlearned.low == pytest.approx(p.base.low + 0.25)
    assert p.n == 8


def test_paired_scores_must_have_equal_length():
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0, 0.0], [1.0])
