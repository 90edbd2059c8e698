import pytest

from streamdycoke.budget import frame_token_budget, ttm_frame_budgets, ttm_retained_count


def test_dycoke_paper_example_counts():
    # T=32, N=196, K=0.7: 8 windows x (196 + 3 x 58)
    assert frame_token_budget(196, 1 - 0.7) == 58
    assert ttm_retained_count(32, 196, 0.7) == 2960


def test_budget_floor_is_robust_to_binary_rounding():
    assert frame_token_budget(100, 0.29) == 29
    assert frame_token_budget(196, 1.0) == 196
    assert frame_token_budget(196, 0.0) == 0


def test_trailing_partial_window_counts_every_frame():
    assert ttm_frame_budgets(6, 10, 0.5) == [10, 5, 5, 5, 10, 5]
    assert ttm_retained_count(5, 10, 0.5) == 10 + 15 + 10


@pytest.mark.parametrize("n, r", [(-1, 0.5), (10, 1.5), (10, -0.1), (10, float("nan"))])
def test_budget_rejects_bad_input(n, r):
    with pytest.raises(ValueError):
        frame_token_budget(n, r)
