"""Running totals become Counter increments once each (actors.metrics._Totals)."""

from actors.metrics import _Totals


class _Counter:
    def __init__(self):
        self.incs = []

    def inc(self, value, tags=None):
        self.incs.append((value, tags))


def test_totals_add_only_what_they_gained_and_start_over_after_a_restart():
    c, t = _Counter(), _Totals()
    t.inc_to(c, "a", 3, {"camera": "x"})
    t.inc_to(c, "a", 3, {"camera": "x"})  # no change: nothing added
    t.inc_to(c, "a", 5, {"camera": "x"})
    t.inc_to(c, "b", 1)  # keys apart
    t.inc_to(c, "a", 2, {"camera": "x"})  # a restarted worker counts from 0 again
    t.inc_to(c, "a", 4, {"camera": "x"})
    assert c.incs == [(3, {"camera": "x"}), (2, {"camera": "x"}), (1, None), (2, {"camera": "x"})]
