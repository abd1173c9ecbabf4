"""Matching: a query's fingerprint → the stored track and where in it the query starts.

The pure array math at the bottom, importing nothing from :mod:`fpstore.db`:
:mod:`~fpstore.matching.vote` (the offset-histogram vote), :mod:`~fpstore.matching.significance` (the
chance model), :mod:`~fpstore.matching.evidence` (what a query contributes, when a track is named) and
:mod:`~fpstore.matching.results` (the answer). Above them, the parts that read the store or the query's
file: :mod:`~fpstore.matching.query` (query preparation), :mod:`~fpstore.matching.ranking` (the vote over
fetched postings or in SQL), :mod:`~fpstore.matching.matcher` (the looks a query gets) and
:mod:`~fpstore.matching.histogram` (one track's votes per offset, for the web page).
"""
