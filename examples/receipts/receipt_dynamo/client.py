"""A tiny DynamoDB client wrapper."""


class DynamoClient:
    """Reads and writes receipt items."""

    def __init__(self, table: str) -> None:
        self.table = table

    def key(self, receipt_id: str) -> dict[str, str]:
        return {"PK": f"RECEIPT#{receipt_id}"}
