"""CDK app: one function whose code is the zip `poetry lambda-zip -o dist/function.zip` wrote."""

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

PACKAGE = "dist/function.zip"


class HelloStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)
        lambda_.Function(
            self,
            "Hello",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.X86_64,
            handler="app.lambda_handler",
            # A .zip is uploaded as it is; its asset hash is the file's, and the zip is
            # byte-reproducible: an unchanged build deploys nothing.
            code=lambda_.Code.from_asset(PACKAGE),
        )


if not Path(PACKAGE).is_file():
    raise SystemExit(f"{PACKAGE} is missing: run `poetry lambda-zip -o {PACKAGE}` first")

app = cdk.App()
HelloStack(app, "HelloStack")
app.synth()
