#!/bin/sh
# Entry point of the services image, in the manner of the AWS base images' /lambda-entrypoint.sh.
#
#   IMAGE services.ingest.handler   a function on the Lambda runtime interface (awslambdaric):
#                                   on Lambda (AWS_LAMBDA_RUNTIME_API set) directly, elsewhere
#                                   under the Runtime Interface Emulator on :8080, so
#                                   `docker run -p 9000:8080 IMAGE` is invocable like an AWS image
#   IMAGE serve ingest | seed ...   anything else is the cartflow CLI (compose's commands)
#
# A handler is a dotted Python name (module.function); CLI commands and options never are.
set -eu

case "${1:-}" in
    "" | -* | *[!A-Za-z0-9_.]* | .* | *. | *..*) is_handler=no ;;
    *.*) is_handler=yes ;;
    *) is_handler=no ;;
esac

if [ "$is_handler" = no ]; then
    exec cartflow "$@"
fi
if [ -z "${AWS_LAMBDA_RUNTIME_API:-}" ]; then
    exec aws-lambda-rie python -m awslambdaric "$@"
fi
exec python -m awslambdaric "$@"
