"""DynamoDB access for receipts."""

from receipt_dynamo.client import DynamoClient

__all__ = ["DynamoClient"]
