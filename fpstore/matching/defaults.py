"""The defaults of the "no match" rule and of the zone that votes: plain constants, importing nothing.

:mod:`fpstore.matching.evidence` uses them; the command line shows them in ``fpstore match --help``
without loading numpy (:mod:`fpstore.matching.evidence` imports it).
"""

from __future__ import annotations

#: Zone name meaning "pool the votes of every zone".
ALL_ZONES = "all"

#: The vote-count thresholds measured for the notebook's vote (pairs, ``DecisionRule(min_votes=...)``;
#: benchmarks/results/2026-11-24-recognition-dev.md). On the 12-track corpus, with every zone pooled,
#: true excerpts got >= 52 aligned votes and not-in-database ones <= 23; in zone Fsmall_Tlong >= 20
#: against <= 10. In the 10,000-track benchmark negatives reached 31 pooled and 13 in Fsmall_Tlong, so
#: the thresholds sit above those.
PLAIN_MIN_VOTES_ALL_ZONES = 40
PLAIN_MIN_VOTES_ONE_ZONE = 15
#: The ratio to the runner-up did not separate the classes (a true excerpt at 1.25, a negative at 4.0),
#: so it is off (1.0) by default.
DEFAULT_MIN_RATIO = 1.0
#: False-alarm rate of the default rule, the calibrated one, fixed before any measurement: one query in
#: a thousand that is not in the database may be named, whatever its length and the catalogue's size
#: (score ``-log10 p > 3``).
DEFAULT_ALPHA = 1e-3
#: Zone used when none is named: alone it separated true and false matches best (20 vs 10 votes) and
#: costs a quarter of pooling all four zones (one index scan instead of four).
DEFAULT_ZONE = "Fsmall_Tlong"
