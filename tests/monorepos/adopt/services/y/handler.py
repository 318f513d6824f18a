from lambda_only import helper


def handler(event, context):
    return helper()
