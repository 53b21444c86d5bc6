"""How reports write an override's value (the leaderboard's table and the sweep plots' labels)."""

from __future__ import annotations


def round_value(text: str | None) -> str:
    """Override values as a reader wants them: 0.034567891 -> 0.03457, 1e-05 stays."""
    if text is None:
        return "-"
    try:
        number = float(text)
    except ValueError:
        return text
    if number.is_integer() and "e" not in text.lower() and "." not in text:
        return text
    return f"{number:.4g}"
