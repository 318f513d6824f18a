"""An image version's build context as a zip in S3, `contexts/<image>/<version>.c<N>.zip`,
uploaded once: the key is content-addressed, so an existing object is reused as is."""

from __future__ import annotations

import logging
import tempfile
import threading
from typing import Any

from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from build_assets.aws.clients import aws_errors, error_code
from build_assets.core.context import BuildContext
from build_assets.errors import UserError

log = logging.getLogger(__name__)

MULTIPART_CHUNK = 16 * 1024 * 1024
SPOOL_IN_MEMORY = 64 * 1024 * 1024  # larger zips are spooled to a temporary file

# What a context zip holds beyond the version's files: 2 = literal FROMs pinned to bases.lock
# (`core.lock.pin_literal_froms`); 3 = the Dockerfile to build at `core.context.DOCKERFILE_SLOT`
# and in the context only where Docker ships it. A zip of an earlier format is never reused.
CONTEXT_FORMAT = 3


def context_key(image: str, version: str) -> str:
    """S3 key of an image version's context zip."""
    return f"contexts/{image}/{version}.c{CONTEXT_FORMAT}.zip"


def transfer_config(multipart_chunk: int = MULTIPART_CHUNK) -> TransferConfig:
    """Multipart uploads in chunks of `multipart_chunk` bytes."""
    return TransferConfig(multipart_threshold=multipart_chunk, multipart_chunksize=multipart_chunk)


def upload_context(
    s3: Any, bucket: str, image: str, version: str, context: BuildContext, transfer: TransferConfig
) -> tuple[str, bool]:
    """Upload the zip of `image` `version`'s `context` unless its content key exists; return
    (key, uploaded)."""
    key = context_key(image, version)
    where = f"s3://{bucket}/{key}"
    with aws_errors("check build context", where):
        try:
            s3.head_object(Bucket=bucket, Key=key)
            log.info("%s: context %s already uploaded", image, where)
            return key, False
        except ClientError as exc:
            if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as buf:
        context.write_zip(buf)  # type: ignore[arg-type]
        size = buf.tell()
        buf.seek(0)
        log.info(
            "%s: uploading context (%d files, %.1f MiB) to %s",
            image,
            context.file_count,
            size / 2**20,
            where,
        )
        with aws_errors("upload build context", where):
            try:
                s3.upload_fileobj(
                    buf,
                    bucket,
                    key,
                    ExtraArgs={
                        "ContentType": "application/zip",
                        "Metadata": {"image": image, "version": version},
                    },
                    Config=transfer,
                    Callback=_Progress(image, size),
                )
            except S3UploadFailedError as exc:  # wraps the ClientError in its message only
                hint = " — run `build-assets bootstrap` first" if "NoSuchBucket" in str(exc) else ""
                raise UserError(f"cannot upload build context ({where}): {exc}{hint}") from exc
    return key, True


class _Progress:
    """boto3 transfer callback logging upload progress at every 25 %."""

    def __init__(self, image: str, total: int) -> None:
        self.image, self.total, self.sent, self.next_mark = image, max(total, 1), 0, 25
        self._lock = threading.Lock()

    def __call__(self, sent: int) -> None:
        with self._lock:
            self.sent += sent
            pct = self.sent * 100 // self.total
            while pct >= self.next_mark and self.next_mark <= 100:
                log.info("%s: context upload %d%%", self.image, self.next_mark)
                self.next_mark += 25
