import pytest
import torch

from streamdycoke import dycoke_ttm, ttm_frame_budgets, ttm_retained_count
from streamdycoke.ttm import ttm_reference_frames


def test_paper_example_keeps_2960_tokens_unchanged_and_sorted(gen):
    x = torch.randn(32, 196, 64, generator=gen)
    out = dycoke_ttm(x, merge_ratio=0.7, window=4)
    assert out.tokens.shape == (2960, 64) and out.index.shape == (2960, 2)
    assert out.index.dtype == torch.long
    assert torch.equal(out.tokens, x[out.index[:, 0], out.index[:, 1]])
    key = out.index[:, 0] * 196 + out.index[:, 1]
    assert bool((key[1:] > key[:-1]).all()), "sorted by frame then patch, no duplicates"


def test_window_first_frames_whole_and_counts_match_budget(gen):
    x = torch.randn(11, 20, 8, generator=gen)
    out = dycoke_ttm(x, merge_ratio=0.6, window=4)
    per_frame = torch.bincount(out.index[:, 0], minlength=11).tolist()
    assert per_frame == ttm_frame_budgets(11, 20, 0.6, 4)
    assert per_frame[0] == per_frame[4] == per_frame[8] == 20
    assert len(out.tokens) == ttm_retained_count(11, 20, 0.6, 4)


def test_reference_pattern_is_the_papers():
    assert ttm_reference_frames(8, 4) == [None, 0, 0, 2, None, 4, 4, 6]


def test_f3_is_judged_against_unpruned_f2_and_f2_against_f0():
    N, D = 10, 4
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, N, D, generator=g)
    # f2 differs from f0 only at positions 0..2; f3 equals f2 except positions 7..9.
    x[2] = x[0]
    x[2, :3] = torch.randn(3, D, generator=g)
    x[3] = x[2]
    x[3, 7:] = torch.randn(3, D, generator=g)
    out = dycoke_ttm(x, merge_ratio=0.7)  # judged frames keep 3 tokens
    kept = {t: out.index[out.index[:, 0] == t, 1].tolist() for t in range(4)}
    assert kept[2] == [0, 1, 2]
    assert kept[3] == [7, 8, 9]


def test_merge_ratio_zero_is_identity(gen):
    x = torch.randn(7, 9, 5, generator=gen)
    out = dycoke_ttm(x, merge_ratio=0.0)
    assert torch.equal(out.tokens, x.reshape(-1, 5))


def test_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\(T, N, D\)"):
        dycoke_ttm(torch.zeros(4, 5))
