"""Median, min and max of one figure over the runs of a scenario."""

import statistics


def spread(values: list[float | None]) -> dict:
    """Summarize one figure over runs; None marks a run where the event never happened.

    Returns runs, measured (runs with a value), median, min and max of the
    measured values (None when no run has one).
    """
    measured = [value for value in values if value is not None]
    return {
        "runs": len(values),
        "measured": len(measured),
        "median": statistics.median(measured) if measured else None,
        "min": min(measured) if measured else None,
        "max": max(measured) if measured else None,
        "values": values,
    }


def ratio(numerator: dict, denominator: dict) -> float | None:
    """Return the ratio of two spreads' medians, or None when either is missing or zero."""
    if not numerator.get("median") or not denominator.get("median"):
        return None
    return numerator["median"] / denominator["median"]
