"""Lambda handler: create labels for a receipt's words."""

from receipt_label.labeler import label


def handler(event: dict, context: object) -> dict:
    return {"labels": [label(w) for w in event.get("words", [])]}
