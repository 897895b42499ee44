"""Duplicate listings: grouping (``group``), checking new listings against an index (``against``), the
candidate graph, photo hashes confirmation, listing readers and output rows."""

from .against import AGAINST_FIELDS, AgainstReport, match_against
from .group import DedupOptions, DedupReport, GroupRow, dedup, find_groups, group_stats
from .listings import Listing, read_listings
from .rows import ROW_FIELDS, write_rows

__all__ = ["AGAINST_FIELDS", "AgainstReport", "DedupOptions", "DedupReport", "GroupRow", "Listing", "ROW_FIELDS",
           "dedup", "find_groups", "group_stats", "match_against", "read_listings", "write_rows"]
