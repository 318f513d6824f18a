"""Validation of merchant metadata."""


def validate(metadata: dict) -> bool:
    return bool(metadata.get("merchant_name"))
