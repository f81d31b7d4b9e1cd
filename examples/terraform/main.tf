# Build the zip first: poetry lambda-zip -o dist/function.zip
terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.51" # code_sha256 below
    }
  }
}

variable "function_name" {
  type    = string
  default = "hello"
}

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "hello" {
  name               = "${var.function_name}-lambda"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
}

resource "aws_iam_role_policy_attachment" "logs" {
  role       = aws_iam_role.hello.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
}

resource "aws_lambda_function" "hello" {
  function_name = var.function_name
  role          = aws_iam_role.hello.arn
  runtime       = "python3.12"
  architectures = ["x86_64"]
  handler       = "app.lambda_handler"
  filename      = "${path.module}/dist/function.zip"
  # base64 of the zip's SHA-256: what Lambda reports as CodeSha256 and the plugin prints as
  # code_sha256. The zip is byte-reproducible, so an unchanged build plans no code update.
  source_code_hash = filebase64sha256("${path.module}/dist/function.zip")
}

output "code_sha256" {
  value = aws_lambda_function.hello.code_sha256
}
