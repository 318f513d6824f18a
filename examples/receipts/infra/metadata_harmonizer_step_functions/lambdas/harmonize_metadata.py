"""Lambda handler: harmonize merchant metadata across receipts."""

from receipt_agent.validate import validate


def handler(event: dict, context: object) -> dict:
    return {"valid": validate(event.get("metadata", {}))}
