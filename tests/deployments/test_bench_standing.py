"""`streamdycoke bench standing`, short and on the tiny model: the rounds it times answer the same with and
without incremental prefill, and the incremental rounds prefill fewer tokens."""

from tools.bench_standing import bench_standing


def test_short_bench_standing_answers_equally_and_prefills_less_with_reuse():
    r = bench_standing(seconds=8, tiny=True, progress=False)
    assert len(r["rounds"]) == 7 and r["answers_equal"]
    assert r["reuse"]["prefilled_tokens_mean"] < r["full"]["prefilled_tokens_mean"]
    for row in r["rounds"]:
        assert row["reuse"]["prefilled"] + row["reuse"]["reused"] == row["full"]["prefilled"]
    assert r["full"]["p50_ms"] > 0 and r["reuse"]["p50_ms"] > 0
