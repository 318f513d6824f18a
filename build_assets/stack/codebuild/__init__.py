"""A CodeBuild-compatible service for the local stack: it really runs each build.

`build-assets stack up` starts `server` on 127.0.0.1 and exports `AWS_ENDPOINT_URL_CODEBUILD`,
so boto3 (and the AWS CLI) send CodeBuild's JSON 1.1 calls here while every other service goes
to moto. Project calls are forwarded to moto; builds are ours: `runner` goes through the phases,
unpacking the S3 source zip (`source`), resolving variables (`variables`), running the
buildspec (`buildspec`) command by command in a shell session on this host (`shell`) and
streaming its output to moto's CloudWatch Logs (`logs`). What differs from AWS CodeBuild is
listed in docs/codebuild.md.
"""
