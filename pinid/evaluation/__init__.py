"""Scoring an index on ground truth: queries, metrics, the run itself, boards, reports and contact sheets."""
