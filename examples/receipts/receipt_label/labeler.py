"""Assigns labels to receipt words."""


def label(word: str) -> str:
    return "TOTAL" if word.lower() == "total" else "OTHER"
