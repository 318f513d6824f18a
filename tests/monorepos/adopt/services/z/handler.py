def handler(event, context):
    return "z"
