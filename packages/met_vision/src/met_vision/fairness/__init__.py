"""Fairness: groups from tags, bias measures and the audit report."""
