"""Content-addressed blobs in S3 (or any S3-compatible store: MinIO, Ceph, OSS, COS).

Why: `FileBlobStore` only works while the API and every worker share one disk. With more than
one machine the claim-check (workflows carry keys and SHA-256, never bytes) needs a store every
process can reach. Same contract as `FileBlobStore`: the key is the SHA-256 of the bytes, so a
second put is a no-op; a get re-hashes what came back and refuses anything that does not match
(a corrupted or overwritten object must never be handed out as a signed contract).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import ClientError
from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from store.blobs import BlobNotFound, sha256_hex

_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}


class S3Settings(BaseSettings):
    """`SIGNBRIDGE_S3_*`; an empty bucket means "no S3": the factory then uses the local disk."""

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_S3_", env_file=None, extra="ignore")

    bucket: str = ""
    endpoint_url: str = ""  # empty: AWS itself; set for MinIO and other S3-compatible stores
    region: str = "us-east-1"
    access_key_id: str = ""  # empty: boto3's default chain (instance role, env, profile)
    secret_access_key: SecretStr = SecretStr("")
    prefix: str = "blobs/"

    @field_validator("prefix")
    @classmethod
    def _one_trailing_slash(cls, v: str) -> str:
        v = v.strip("/")
        return f"{v}/" if v else ""

    def client(self) -> Any:
        """A boto3 S3 client; explicit keys only when configured, so IAM roles keep working."""
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.access_key_id:
            kwargs["aws_access_key_id"] = self.access_key_id
            kwargs["aws_secret_access_key"] = self.secret_access_key.get_secret_value()
        return boto3.client("s3", **kwargs)


def _valid_key(key: str) -> bool:
    return len(key) == 64 and all(c in "0123456789abcdef" for c in key)


def _not_found(e: ClientError) -> bool:
    return str(e.response.get("Error", {}).get("Code", "")) in _NOT_FOUND_CODES


class S3BlobStore:
    """Blobs at `s3://bucket/<prefix>ab/cd/<sha256>`; the fan-out mirrors `FileBlobStore`'s layout."""

    def __init__(self, client: Any, bucket: str, prefix: str = "blobs/") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    @classmethod
    def from_settings(cls, s3: S3Settings) -> S3BlobStore:
        return cls(s3.client(), s3.bucket, s3.prefix)

    def object_key(self, key: str) -> str:
        if not _valid_key(key):
            raise BlobNotFound(key)
        return f"{self.prefix}{key[:2]}/{key[2:4]}/{key}"

    def put(self, data: bytes) -> str:
        """Store once. S3 PUTs are atomic, so readers never see half an object."""
        key = sha256_hex(data)
        if self.exists(key):
            return key
        self.client.put_object(
            Bucket=self.bucket, Key=self.object_key(key), Body=data,
            ContentType="application/octet-stream", Metadata={"sha256": key},
        )
        return key

    def get(self, key: str) -> bytes:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as e:
            if _not_found(e):
                raise BlobNotFound(key) from e
            raise
        data: bytes = resp["Body"].read()
        if sha256_hex(data) != key:
            raise BlobNotFound(f"{key} is corrupt in s3://{self.bucket}/{self.prefix}")
        return data

    def exists(self, key: str) -> bool:
        if not _valid_key(key):
            return False
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as e:
            if _not_found(e):
                return False
            raise
        return True
