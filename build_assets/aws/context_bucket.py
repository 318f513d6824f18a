"""The S3 bucket of build contexts: default encryption, public access blocked, and `contexts/`
expiring after N days (the zips are content-addressed: an expired one is uploaded again)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from build_assets.aws.bootstrap_actions import CREATED, differs, status_of, tag_list
from build_assets.aws.clients import aws_errors, error_code
from build_assets.errors import UserError

DEFAULT_EXPIRY_DAYS = 30
LIFECYCLE_RULE_ID = "build-assets-expire-contexts"
PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def lifecycle_rule(expiry_days: int) -> dict[str, Any]:
    """The bucket lifecycle rule expiring `contexts/` (other rules of the bucket are kept)."""
    return {
        "ID": LIFECYCLE_RULE_ID,
        "Filter": {"Prefix": "contexts/"},
        "Status": "Enabled",
        "Expiration": {"Days": expiry_days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }


@dataclass(frozen=True)
class ContextBucket:
    """Reads the bucket and (unless `dry_run`) creates it or brings its settings in line."""

    s3: Any
    bucket: str
    region: str
    expiry_days: int = DEFAULT_EXPIRY_DAYS
    dry_run: bool = False

    def ensure(self) -> tuple[str, list[str]]:
        """(created | updated | unchanged, what changed)."""
        where = f"s3://{self.bucket}"
        with aws_errors("read S3 bucket", where):
            exists = self._exists()
        if not exists:
            if not self.dry_run:
                with aws_errors("create S3 bucket", where):
                    self._create()
            return CREATED, []
        with aws_errors("read S3 bucket settings", where):
            changes = self._update()
        return status_of(changes), changes

    def _exists(self) -> bool:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
            return True
        except ClientError as exc:
            if error_code(exc) in ("403", "AccessDenied"):
                raise UserError(
                    f"S3 bucket {self.bucket} exists but is not accessible (owned by another"
                    " account? bucket names are global: choose another with --bucket)"
                ) from exc
            if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            return False

    def _create(self) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self.s3.create_bucket(**kwargs)
        self._put_encryption()
        self._put_public_access_block()
        self._put_lifecycle([])
        self.s3.put_bucket_tagging(Bucket=self.bucket, Tagging={"TagSet": tag_list()})

    def _update(self) -> list[str]:
        changes: list[str] = []
        if not self._has_encryption():
            changes.append("encryption")
            if not self.dry_run:
                self._put_encryption()
        if not self._blocks_public_access():
            changes.append("public access block")
            if not self.dry_run:
                self._put_public_access_block()
        rules = self._lifecycle_rules()
        ours = next((r for r in rules if r.get("ID") == LIFECYCLE_RULE_ID), None)
        if ours is None or differs(lifecycle_rule(self.expiry_days), ours):
            changes.append(f"lifecycle: expire contexts/ after {self.expiry_days} days")
            if not self.dry_run:
                self._put_lifecycle([r for r in rules if r.get("ID") != LIFECYCLE_RULE_ID])
        return changes

    def _has_encryption(self) -> bool:
        try:
            conf = self.s3.get_bucket_encryption(Bucket=self.bucket)
        except ClientError as exc:
            if error_code(exc) == "ServerSideEncryptionConfigurationNotFoundError":
                return False
            raise
        rules = conf.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        return any(
            r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules
        )

    def _put_encryption(self) -> None:
        self.s3.put_bucket_encryption(
            Bucket=self.bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )

    def _blocks_public_access(self) -> bool:
        try:
            conf = self.s3.get_public_access_block(Bucket=self.bucket)
        except ClientError as exc:
            if error_code(exc) == "NoSuchPublicAccessBlockConfiguration":
                return False
            raise
        return not differs(PUBLIC_ACCESS_BLOCK, conf.get("PublicAccessBlockConfiguration", {}))

    def _put_public_access_block(self) -> None:
        self.s3.put_public_access_block(
            Bucket=self.bucket, PublicAccessBlockConfiguration=dict(PUBLIC_ACCESS_BLOCK)
        )

    def _lifecycle_rules(self) -> list[dict[str, Any]]:
        try:
            return self.s3.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
        except ClientError as exc:
            if error_code(exc) == "NoSuchLifecycleConfiguration":
                return []
            raise

    def _put_lifecycle(self, other_rules: list[dict[str, Any]]) -> None:
        self.s3.put_bucket_lifecycle_configuration(
            Bucket=self.bucket,
            LifecycleConfiguration={"Rules": [*other_rules, lifecycle_rule(self.expiry_days)]},
        )
