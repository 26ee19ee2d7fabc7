"""S3 locations and boto3 clients, and AWS errors as one sentence that names the bucket and key.

Nothing here chooses credentials, a region or an endpoint: boto3's own chain does (environment,
shared files, instance roles; ``AWS_REGION``/``AWS_DEFAULT_REGION``; ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_S3`` for S3-compatible stores such as MinIO). ``file://`` URIs stand for local
folders wherever an S3 URI is accepted, as the SageMaker SDK's local mode allows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import UserError, one_line
from ..names import shown

MAX_POOL_CONNECTIONS = 32  # room for the transfer threads of a download, an upload and the Pipe feeders
RETRIES = {"max_attempts": 8, "mode": "standard"}  # throttling, 5xx and dropped connections are retried

_REASONS = {
    "NoSuchBucket": "the bucket does not exist",
    "NoSuchKey": "there is no such object",
    "404": "there is no such object",
    "NotFound": "there is no such object",
    "AccessDenied": "access is denied to these credentials",
    "403": "access is denied to these credentials",
    "Forbidden": "access is denied to these credentials",
    "InvalidAccessKeyId": "the access key is not known to the server",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "ExpiredToken": "the session token has expired",
    "AllAccessDisabled": "all access to the bucket is disabled",
}


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/key`` (the key may be a prefix), or a local path for ``file://`` and plain paths."""

    bucket: str
    key: str
    local: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.local is not None

    @property
    def uri(self) -> str:
        return self.local.as_uri() if self.local is not None else f"s3://{self.bucket}/{self.key}"

    def child(self, *names: str) -> S3Location:
        """The location ``names`` below this one, joined with single slashes."""
        if self.local is not None:
            return S3Location("", "", self.local.joinpath(*names))
        parts = [self.key.rstrip("/")] if self.key.strip("/") else []
        return S3Location(self.bucket, "/".join(parts + [n.strip("/") for n in names]))

    def __str__(self) -> str:
        return self.uri


def parse_uri(uri: str, what: str = "location") -> S3Location:
    """An ``s3://bucket/key``, ``file:///path`` or plain local path; anything else is a user error."""
    uri = str(uri).strip()
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UserError(f"The {what} '{shown(uri)}' names no bucket; write it as s3://bucket/key")
        return S3Location(parsed.netloc, parsed.path.lstrip("/"))
    if parsed.scheme == "file":
        return S3Location("", "", Path(unquote(parsed.path)))
    if parsed.scheme == "" and uri:
        return S3Location("", "", Path(uri).absolute())
    raise UserError(f"The {what} '{shown(uri)}' is neither an s3:// URI nor a file:// path")


_clients: dict[tuple[str, str | None], object] = {}
_clients_lock = threading.Lock()


def client(service: str = "s3", endpoint_url: str | None = None):
    """The process's boto3 client for ``service`` (clients are thread-safe; making them is not)."""
    import boto3
    from botocore.config import Config

    key = (service, endpoint_url)
    with _clients_lock:
        if key not in _clients:
            config = Config(retries=RETRIES, max_pool_connections=MAX_POOL_CONNECTIONS)
            try:
                _clients[key] = boto3.session.Session().client(service, endpoint_url=endpoint_url, config=config)
            except Exception as exc:  # botocore's NoRegionError and friends: a configuration the user fixes
                raise UserError(
                    f"No {service} client could be made ({one_line(exc)}); set AWS_REGION or choose a profile"
                ) from None
        return _clients[key]


def reset_clients() -> None:
    """Forget the clients made so far: the next ones read the environment again."""
    with _clients_lock:
        _clients.clear()


def explain(exc: BaseException, doing: str, location: S3Location | str) -> UserError:
    """One sentence for a failed S3 call: what was being done, where, and what went wrong."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, PartialCredentialsError

    where = shown(location.uri if isinstance(location, S3Location) else location)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        reason = "no AWS credentials were found (environment, ~/.aws or an instance role)"
    elif isinstance(exc, EndpointConnectionError):
        reason = f"the endpoint could not be reached ({one_line(exc)})"
    elif isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        reason = _REASONS.get(code) or f"{code or 'the server'} said: {error.get('Message') or one_line(exc)}"
    else:
        reason = one_line(exc)
    return UserError(f"Could not {doing} {where}: {reason}")


@contextmanager
def explained(doing: str, location: S3Location | str) -> Iterator[None]:
    """Turn any boto3 failure inside the block into ``explain``'s sentence."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise explain(exc, doing, location) from None


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    modified: float  # seconds since the epoch


def list_objects(location: S3Location) -> list[ObjectInfo]:
    """Every object under the prefix, in key order; "folder" placeholder keys ending in / are left out."""
    objects = []
    with explained("list", location):
        pages = client().get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.key)
        for page in pages:
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):
                    objects.append(
                        ObjectInfo(item["Key"], item["Size"], item["ETag"].strip('"'), item["LastModified"].timestamp())
                    )
    return objects


_MISSING = ("404", "NoSuchKey", "NotFound")


def object_exists(location: S3Location) -> bool:
    """Whether ``location`` is one object (not merely a prefix of some); other failures are one sentence."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client().head_object(Bucket=location.bucket, Key=location.key)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in _MISSING:
            return False
        raise explain(exc, "read", location) from None
    except BotoCoreError as exc:
        raise explain(exc, "read", location) from None
    return True


def any_object_under(location: S3Location) -> bool:
    """Whether at least one object's key starts with ``location``'s key (one listing request)."""
    with explained("list", location):
        page = client().list_objects_v2(Bucket=location.bucket, Prefix=location.key, MaxKeys=1)
    return bool(page.get("Contents"))


def read_object(location: S3Location) -> bytes:
    """The whole object (or local file) at ``location``."""
    if location.is_local:
        try:
            return location.local.read_bytes()
        except OSError as exc:
            raise UserError(f"Could not read {location.uri}: {exc.strerror or exc}") from None
    with explained("read", location):
        return client().get_object(Bucket=location.bucket, Key=location.key)["Body"].read()


def write_object(location: S3Location, data: bytes) -> None:
    if location.is_local:
        location.local.parent.mkdir(parents=True, exist_ok=True)
        tmp = location.local.with_name(f".{location.local.name}.partial")
        tmp.write_bytes(data)
        tmp.replace(location.local)
        return
    with explained("write", location):
        client().put_object(Bucket=location.bucket, Key=location.key, Body=data)
