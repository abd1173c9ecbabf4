"""Wording of what fpstore tells people: counts with the right singular or plural."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, singular for one, plural otherwise; thousands separated by commas.

    Parameters
    ----------
    n : int
    noun : str
        Singular form.
    plural : str, optional
        Plural form when it is not ``noun + "s"``.

    Examples
    --------
    >>> counted(1, "file"), counted(0, "file"), counted(12345, "posting"), counted(2, "query", "queries")
    ('1 file', '0 files', '12,345 postings', '2 queries')
    """
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
