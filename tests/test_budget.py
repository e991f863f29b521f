"""n2ngraph.budget: the density check and the largest-remainder split, against brute force."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from n2ngraph.budget import apportion, check_density


@pytest.mark.parametrize("value", [1e-9, 0.02, 0.5, 1, 1.0, np.float32(0.25), np.int64(1)])
def test_check_density_accepts_kept_fractions(value):
    assert check_density(value) == float(value)


@pytest.mark.parametrize("value", [0, 0.0, -0.1, 1.0000001, 2, math.nan, math.inf, -math.inf])
def test_check_density_refuses_out_of_range_naming_the_range(value):
    with pytest.raises(ValueError, match=r"density must lie in \(0, 1\]"):
        check_density(value)


@pytest.mark.parametrize("value", [True, "0.1", None, [0.1], 1 + 0j])
def test_check_density_refuses_non_numbers(value):
    with pytest.raises(TypeError, match="density must be a real number"):
        check_density(value)


def test_check_density_options_and_name():
    assert check_density(0, allow_zero=True) == 0.0
    assert check_density(3.5, allow_above_one=True) == 3.5
    with pytest.raises(ValueError, match=r"n2nskip density must lie in \[0, 1\]"):
        check_density(-1, name="n2nskip density", allow_zero=True)


def _brute_force(total, weights, caps):
    """The allocation closest to the proportional quota (max |share - quota| smallest) among
    all integer vectors within caps that sum to total; used only to bound apportion's error."""
    best = None
    for shares in itertools.product(*(range(c + 1) for c in caps)):
        if sum(shares) == total:
            err = max(abs(s - total * w / sum(weights)) for s, w in zip(shares, weights))
            best = err if best is None else min(best, err)
    return best


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=6), st.integers(0, 200), st.integers(0, 2**32 - 1))
def test_apportion_is_hamilton_within_one_of_the_quota(weights, total, seed):
    shares = apportion(total, weights, rng=np.random.default_rng(seed))
    quota = total * np.asarray(weights, float) / sum(weights)
    assert shares.dtype == np.int64 and shares.sum() == total
    assert np.all(shares >= np.floor(quota)) and np.all(shares <= np.ceil(quota))
    # the units beyond the floors go to the largest remainders
    extra = shares - np.floor(quota)
    rem = quota - np.floor(quota)
    if extra.any() and (extra == 0).any():
        assert rem[extra == 1].min() >= rem[extra == 0].max() - 1e-12


def test_apportion_caps_respected_and_close_to_the_best_split():
    rng = np.random.default_rng(1)
    for _ in range(60):
        n = int(rng.integers(1, 4))
        weights = rng.integers(1, 6, n).tolist()
        caps = rng.integers(0, 6, n).tolist()
        total = int(rng.integers(0, sum(caps) + 1))
        shares = apportion(total, weights, caps=caps)
        assert shares.sum() == total and np.all(shares <= caps) and np.all(shares >= 0)
        best = _brute_force(total, weights, caps)
        err = np.max(np.abs(shares - total * np.asarray(weights) / sum(weights)))
        assert err <= best + 1 + 1e-9  # capped redistribution rounds once more at most


def test_apportion_ties_go_to_the_lower_index_or_follow_the_rng():
    assert apportion(2, [1, 1, 1]).tolist() == [1, 1, 0]
    drawn = {tuple(apportion(1, [1, 1, 1], rng=np.random.default_rng(s)).tolist()) for s in range(40)}
    assert drawn == {(1, 0, 0), (0, 1, 0), (0, 0, 1)}


def test_apportion_degenerate_inputs():
    assert apportion(0, [3, 4]).tolist() == [0, 0]
    assert apportion(4, [0, 0]).tolist() == [2, 2]          # no weight: equal split
    assert apportion(3, [5, 1], caps=[0, 9]).tolist() == [0, 3]  # a closed share takes nothing


@pytest.mark.parametrize("args, kwargs, match", [
    ((-1, [1]), {}, "must be >= 0"),
    ((3, [1, -1]), {}, "finite numbers >= 0"),
    ((3, [[1, 2]]), {}, "1-d sequence"),
    ((3, [1, np.nan]), {}, "finite numbers"),
    ((5, [1, 1]), {"caps": [2, 2]}, "caps hold only 4"),
])
def test_apportion_refuses_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        apportion(*args, **kwargs)
