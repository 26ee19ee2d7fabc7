"""Errors a user can cause, each carrying one sentence that is shown to them verbatim.

Training writes the sentence to ``output/failure`` and exits non-zero; serving returns it as
``{"error": ...}`` with the HTTP status the error class names. Anything that is not a
``UserError`` is a bug in this program and is reported as such, with the traceback in the log only.
"""


class UserError(Exception):
    """A problem with the user's input or configuration, explained in one sentence."""

    http_status = 400


class UnsupportedContentType(UserError):
    http_status = 415


class UnsupportedAccept(UserError):
    http_status = 406


class PayloadTooLarge(UserError):
    http_status = 413
