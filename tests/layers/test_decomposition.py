"""The decomposition rules against the published tables and the receptive-field formula."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from largekernel.layers.decomposition import exact_dilations, lka_decomposition, lska_decomposition
from reference_tables import LSKA_TABLE


@pytest.mark.parametrize("kernel_size", sorted(LSKA_TABLE))
def test_lska_reproduces_published_table(kernel_size):
    dec = lska_decomposition(kernel_size)
    assert (dec.dilation, dec.dense_size, dec.dense_padding, dec.dilated_size, dec.dilated_padding) == LSKA_TABLE[
        kernel_size
    ]


@given(st.integers(min_value=1, max_value=200).map(lambda n: 2 * n + 1))
def test_lska_receptive_field_is_exactly_kernel_size(kernel_size):
    dec = lska_decomposition(kernel_size)
    assert dec.receptive_field == kernel_size
    assert dec.dilated_size % 2 == 1 and dec.dense_size == 2 * dec.dilation - 1
    # the chosen dilation has the fewest weights among all exact ones
    cost = lambda d: (2 * d - 1) + ((kernel_size + 1) // d - 1)
    assert cost(dec.dilation) == min(cost(d) for d in exact_dilations(kernel_size))


def test_lska_user_dilation_honoured_or_rejected():
    assert lska_decomposition(23, dilation=4).dilated_size == 5  # 7 + 4 * 4 = 23
    with pytest.raises(ValueError, match=r"dilation 5 .* Valid dilations for kernel_size 23: \[1, 2, 3, 4, 6, 12\]"):
        lska_decomposition(23, dilation=5)


def test_lka_van_default_and_paper_comparison_sizes():
    van = lka_decomposition(21)
    assert (van.dense_size, van.dense_padding, van.dilated_size, van.dilation, van.dilated_padding) == (5, 2, 7, 3, 9)
    assert van.receptive_field == 23
    # the LSKA paper compares LKA and LSKA with the same a, m and d at each k
    for kernel_size in LSKA_TABLE:
        lka, lska = lka_decomposition(kernel_size), lska_decomposition(kernel_size)
        assert (lka.dilation, lka.dense_size, lka.dilated_size) == (lska.dilation, lska.dense_size, lska.dilated_size)


@given(st.integers(min_value=1, max_value=100).map(lambda n: 2 * n + 1), st.integers(min_value=1, max_value=8))
def test_lka_receptive_field_covers_kernel_with_smallest_odd_m(kernel_size, dilation):
    if 2 * dilation - 1 > kernel_size:
        with pytest.raises(ValueError, match="dilation"):
            lka_decomposition(kernel_size, dilation)
        return
    dec = lka_decomposition(kernel_size, dilation)
    assert dec.receptive_field >= kernel_size
    assert dec.dilated_size % 2 == 1
    smaller = dec.dilated_size - 2
    assert smaller < 1 or dec.dense_size + dilation * (smaller - 1) < kernel_size


@pytest.mark.parametrize("bad", [0, 1, 2, 4, 22, -3])
def test_bad_kernel_sizes_rejected(bad):
    with pytest.raises(ValueError, match=f"odd integer >= 3.*got {bad}"):
        lska_decomposition(bad)
    with pytest.raises(ValueError, match=f"got {bad}"):
        lka_decomposition(bad)


def test_non_integer_kernel_size_rejected():
    with pytest.raises(TypeError, match="kernel_size must be an int"):
        lska_decomposition(23.0)
