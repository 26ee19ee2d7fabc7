#!/bin/sh
# The image's ENTRYPOINT: SageMaker starts it as `IMAGE train` or `IMAGE serve`; anything else runs as given.
#
# It only dispatches. tini becomes PID 1 (it is not the ENTRYPOINT itself, which SageMaker's
# train/serve arguments would confuse): it forwards SIGTERM and SIGINT to the program, reaps every
# orphaned child, and exits with the program's status, so `docker stop` and StopTrainingJob reach
# the training loop and gunicorn's graceful shutdown. (-s makes it a subreaper too when something
# else, such as `docker run --init`, is PID 1.)
set -eu

case "${1:-}" in
    train)
        shift
        exec tini -s -- /opt/semseg/venv/bin/train "$@"
        ;;
    serve)
        shift
        exec tini -s -- /opt/semseg/venv/bin/serve "$@"
        ;;
    "")
        echo "usage: IMAGE train | IMAGE serve | IMAGE <command> [args...]" >&2
        exit 2
        ;;
    *)
        exec tini -s -- "$@"
        ;;
esac
