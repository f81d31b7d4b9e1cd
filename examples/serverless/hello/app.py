import json

import six


def lambda_handler(event, context):
    """Answer API Gateway's proxy event with a greeting."""
    params = event.get("queryStringParameters") or {}
    name = params.get("name", "world")
    return {
        "statusCode": 200,
        "body": json.dumps({"message": f"hello {name}", "six": six.__version__}),
    }
