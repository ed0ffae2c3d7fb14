"""An S3 (or S3-compatible) bucket and prefix as a remote, through boto3.

The endpoint and credentials come from where every AWS tool looks: ``AWS_ENDPOINT_URL``
(or ``endpoint_url`` in the profile), ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``~/.aws/credentials`` and ``~/.aws/config``. boto3 is an optional
dependency (``pip install 'cachewatch[s3]'``).

Objects go up with ``put_object`` (whole, with the SDK's payload checksum) or, above the
multipart threshold, ``upload_file`` (parts in parallel, each checksummed). The manifest
is created with ``If-None-Match: *``, so two pushes never overwrite each other's commit.
A server without conditional writes (it answers 501 NotImplemented, or 400 naming the
header) gets the documented fallback: HEAD, then PUT, then read back and compare; that
leaves a window in which two concurrent pushes can both think they committed.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterator

from .errors import RemoteConfigError, SyncError
from .remote import Remote

__all__ = ["S3Remote", "MULTIPART_THRESHOLD_BYTES"]

MULTIPART_THRESHOLD_BYTES = 64 * 1024 * 1024
MULTIPART_CHUNK_BYTES = 16 * 1024 * 1024

_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
                     "InvalidClientTokenId", "UnrecognizedClientException", "403", "Forbidden"}
_NO_CONDITIONAL_CODES = {"NotImplemented", "501"}


class S3Remote(Remote):
    def __init__(self, url: str, *, workers: int = 16) -> None:
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config as BotoConfig
        except ImportError:
            raise RemoteConfigError(
                f"remote {url!r} needs boto3, which is not installed; pip install 'cachewatch[s3]' (or boto3)"
            ) from None
        rest = url[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise RemoteConfigError(f"remote {url!r} names no bucket; write s3://bucket/prefix")
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.conditional_writes = True
        session = boto3.session.Session()
        cfg = BotoConfig(max_pool_connections=max(10, workers + 4), retries={"max_attempts": 5, "mode": "standard"})
        self.client = session.client("s3", config=cfg)
        self.endpoint = self.client.meta.endpoint_url
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD_BYTES,
            multipart_chunksize=MULTIPART_CHUNK_BYTES,
            max_concurrency=4,
        )
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------- errors
    def _error(self, exc: BaseException, what: str) -> BaseException:
        """One line for the humans: which remote, what went wrong, what to do."""
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        where = f"{self.url} (endpoint {self.endpoint})"
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return RemoteConfigError(
                f"no AWS credentials found for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                f"or AWS_PROFILE / ~/.aws/credentials"
            )
        if isinstance(exc, EndpointConnectionError):
            return RemoteConfigError(f"cannot reach the S3 endpoint of {where}: check AWS_ENDPOINT_URL and the network")
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _CREDENTIAL_CODES or status == 403:
                return RemoteConfigError(
                    f"credentials rejected by {where} ({code or status}) while trying to {what}: check "
                    f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket policy"
                )
            if code == "NoSuchBucket":
                return RemoteConfigError(f"bucket '{self.bucket}' does not exist at {self.endpoint}; create it or check the URL")
            if code in ("NoSuchKey", "404", "NotFound"):
                return SyncError(f"{what}: not found at {where}; push the cache again")
            return SyncError(f"{what} at {where} failed: {code or status} {err.get('Message', '')}".rstrip())
        if isinstance(exc, OSError):
            return SyncError(f"{what} at {where} failed: {exc}")
        return exc

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:
            mapped = self._error(exc, what)
            if mapped is exc:
                raise
            raise mapped from None

    # ------------------------------------------------------------------------------ objects
    def _key(self, name: str) -> str:
        return self.prefix + name

    def _list(self, sub: str) -> Iterator[tuple[str, int]]:
        paginator = self.client.get_paginator("list_objects_v2")
        start = len(self.prefix)
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + sub):
                for obj in page.get("Contents", ()):
                    yield obj["Key"][start:], int(obj["Size"])
        except Exception as exc:
            mapped = self._error(exc, f"list {sub}")
            if mapped is exc:
                raise
            raise mapped from None

    def list_objects(self) -> Iterator[tuple[str, int]]:
        return self._list("objects/")

    def put_bytes(self, name: str, data: bytes, xxh3: str) -> None:
        self._call(f"upload {name}", self.client.put_object, Bucket=self.bucket, Key=self._key(name), Body=data,
                   Metadata={"xxh3": xxh3}, ChecksumAlgorithm="CRC32")

    def put_file(self, name: str, path: str, size_bytes: int, xxh3: str) -> None:
        self._call(f"upload {name}", self.client.upload_file, Filename=path, Bucket=self.bucket, Key=self._key(name),
                   ExtraArgs={"Metadata": {"xxh3": xxh3}, "ChecksumAlgorithm": "CRC32"}, Config=self._transfer)

    def get_bytes(self, name: str) -> bytes:
        def fetch() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        return self._call(f"download {name}", fetch)  # type: ignore[no-any-return]

    def get_file(self, name: str, dest: str) -> None:
        self._call(f"download {name}", self.client.download_file, Bucket=self.bucket, Key=self._key(name), Filename=dest,
                   Config=self._transfer)

    def list_manifest_names(self) -> list[str]:
        return [n for n, _ in self._list("manifests/")]

    def create_manifest(self, name: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        if self.conditional_writes:
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data, IfNoneMatch="*",
                                       ContentType="application/json")
                return True
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code == "PreconditionFailed" or status == 412:
                    return False
                if code == "ConditionalRequestConflict" or status == 409:
                    return False  # a concurrent create of the same name is in flight: take the next number
                if not (code in _NO_CONDITIONAL_CODES or status == 501 or (status == 400 and "If-None-Match" in str(exc))):
                    raise self._error(exc, f"create {name}") from None
                self.conditional_writes = False
            except Exception as exc:
                mapped = self._error(exc, f"create {name}")
                if mapped is exc:
                    raise
                raise mapped from None
        # Fallback for servers without conditional writes: not atomic (documented in docs/sync.md).
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
            return False
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                raise self._error(exc, f"check {name}") from None
        self._call(f"create {name}", self.client.put_object, Bucket=self.bucket, Key=self._key(name), Body=data,
                   ContentType="application/json")
        return bytes(self.get_bytes(name)) == data
