"""Counts in messages a person reads: "1 row", "2 rows", "1,000 bodies"."""


def plural(count, noun, nouns=None):
    """`count` (with thousands separators) and `noun`, or `nouns` (default noun + "s") unless one."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"
