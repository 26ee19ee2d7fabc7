"""The exit codes of the commands, as SageMaker, a shell and a multi-host job read them."""

FAILED = 1  # the failure file (or stderr) says why in one sentence: a user's error, or another host's
INTERNAL_ERROR = 2  # a bug of this program: the log holds the traceback
STOPPED = 143  # 128 + SIGTERM, what an interrupted process reports: training stopped on request
BELOW_BAR = 3  # semseg evaluate --fail-below: every file is written, and a figure is below its bar
