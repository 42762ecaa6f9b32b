"""boto3 against the Cairn S3 gateway: S3 Object Lock (issue 13): buckets
created with Object Lock, default retention, GOVERNANCE (bypass by the
owner) and COMPLIANCE retention (never shortened, never bypassed), legal
holds, refusals on buckets without Object Lock. Run by tests/it/s3.rs with
S3_ENDPOINT, S3_KEY, S3_SECRET in the environment. Prints one line per
check; exits non-zero on the first failure."""

import datetime
import os
import time

import boto3
import botocore
from botocore.config import Config

s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["S3_ENDPOINT"],
    aws_access_key_id=os.environ["S3_KEY"],
    aws_secret_access_key=os.environ["S3_SECRET"],
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                  retries={"max_attempts": 1}),
)
B = "locked"
NOW = lambda: datetime.datetime.now(datetime.timezone.utc)


def ok(name):
    print("ok", name, flush=True)


def eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def expect_error(code, fn, *args, status=None, **kwargs):
    try:
        fn(*args, **kwargs)
    except botocore.exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        st = e.response["ResponseMetadata"]["HTTPStatusCode"]
        if got != code and got != str(status):
            raise AssertionError(f"expected {code}, got {got}: {e}")
        if status is not None and st != status:
            raise AssertionError(f"expected status {status} for {code}, got {st}")
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


# --- buckets without Object Lock refuse it
s3.create_bucket(Bucket="plain")
expect_error("ObjectLockConfigurationNotFoundError", s3.get_object_lock_configuration,
             Bucket="plain", status=404)
s3.put_object(Bucket="plain", Key="k", Body=b"x")
expect_error("InvalidRequest", s3.put_object_retention, Bucket="plain", Key="k",
             Retention={"Mode": "GOVERNANCE", "RetainUntilDate": NOW() + datetime.timedelta(days=1)},
             status=400)
expect_error("InvalidBucketState", s3.put_object_lock_configuration, Bucket="plain",
             ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}, status=409)
ok("refused without Object Lock")

# --- a bucket created with Object Lock
s3.create_bucket(Bucket=B, ObjectLockEnabledForBucket=True)
eq(s3.get_bucket_versioning(Bucket=B).get("Status"), "Enabled", "versioning on")
c = s3.get_object_lock_configuration(Bucket=B)["ObjectLockConfiguration"]
eq(c.get("ObjectLockEnabled"), "Enabled", "lock enabled")
eq(c.get("Rule"), None, "no default yet")
expect_error("InvalidBucketState", s3.put_bucket_versioning, Bucket=B,
             VersioningConfiguration={"Status": "Suspended"}, status=409)
v0 = s3.put_object(Bucket=B, Key="k0", Body=b"free")["VersionId"]
expect_error("NoSuchObjectLockConfiguration", s3.get_object_retention, Bucket=B, Key="k0",
             status=404)
eq(s3.get_object_legal_hold(Bucket=B, Key="k0")["LegalHold"]["Status"], "OFF", "no hold")
expect_error("NotImplemented", s3.put_object, Bucket=B, Key="hdr", Body=b"x",
             ObjectLockMode="GOVERNANCE",
             ObjectLockRetainUntilDate=NOW() + datetime.timedelta(days=1), status=501)
s3.delete_object(Bucket=B, Key="k0", VersionId=v0)
ok("bucket with Object Lock")

# --- default retention
s3.put_object_lock_configuration(Bucket=B, ObjectLockConfiguration={
    "ObjectLockEnabled": "Enabled",
    "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
rule = s3.get_object_lock_configuration(Bucket=B)["ObjectLockConfiguration"]["Rule"]
eq(rule["DefaultRetention"], {"Mode": "GOVERNANCE", "Days": 1}, "default retention")
expect_error("MalformedXML", s3.put_object_lock_configuration, Bucket=B,
             ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {
                 "DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1, "Years": 1}}},
             status=400)
v1 = s3.put_object(Bucket=B, Key="k", Body=b"one")["VersionId"]
h = s3.head_object(Bucket=B, Key="k", VersionId=v1)
eq(h.get("ObjectLockMode"), "GOVERNANCE", "HEAD lock mode")
left = h["ObjectLockRetainUntilDate"] - NOW()
if not datetime.timedelta(hours=23) < left <= datetime.timedelta(days=1):
    raise AssertionError(f"retain until {h['ObjectLockRetainUntilDate']}")
r = s3.get_object_retention(Bucket=B, Key="k", VersionId=v1)["Retention"]
eq(r["Mode"], "GOVERNANCE", "GetObjectRetention")
ok("default retention")

# --- GOVERNANCE: the owner may bypass it, nobody deletes without
expect_error("AccessDenied", s3.delete_object, Bucket=B, Key="k", VersionId=v1, status=403)
d = s3.delete_object(Bucket=B, Key="k")
eq(d.get("DeleteMarker"), True, "a delete marker needs no bypass")
eq(s3.get_object(Bucket=B, Key="k", VersionId=v1)["Body"].read(), b"one", "locked version kept")
r = s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "k", "VersionId": v1}]})
eq([e["Code"] for e in r.get("Errors", [])], ["AccessDenied"], "multi-delete refused")
s3.delete_object(Bucket=B, Key="k", VersionId=v1, BypassGovernanceRetention=True)
expect_error("NoSuchVersion", s3.get_object, Bucket=B, Key="k", VersionId=v1, status=404)
ok("governance retention")

# --- COMPLIANCE: lengthened only, never bypassed, free once it ends
v2 = s3.put_object(Bucket=B, Key="c", Body=b"two")["VersionId"]
soon = NOW() + datetime.timedelta(seconds=4)
expect_error("AccessDenied", s3.put_object_retention, Bucket=B, Key="c", VersionId=v2,
             Retention={"Mode": "COMPLIANCE", "RetainUntilDate": soon}, status=403)
s3.put_object_retention(Bucket=B, Key="c", VersionId=v2, BypassGovernanceRetention=True,
                        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": soon})
eq(s3.get_object_retention(Bucket=B, Key="c", VersionId=v2)["Retention"]["Mode"],
   "COMPLIANCE", "compliance set")
expect_error("AccessDenied", s3.put_object_retention, Bucket=B, Key="c", VersionId=v2,
             BypassGovernanceRetention=True,
             Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon}, status=403)
expect_error("AccessDenied", s3.put_object_retention, Bucket=B, Key="c", VersionId=v2,
             BypassGovernanceRetention=True,
             Retention={"Mode": "COMPLIANCE", "RetainUntilDate": soon - datetime.timedelta(seconds=2)},
             status=403)
expect_error("AccessDenied", s3.delete_object, Bucket=B, Key="c", VersionId=v2,
             BypassGovernanceRetention=True, status=403)
expect_error("InvalidArgument", s3.put_object_retention, Bucket=B, Key="c", VersionId=v2,
             Retention={"Mode": "COMPLIANCE", "RetainUntilDate": NOW() - datetime.timedelta(days=1)},
             status=400)
time.sleep(max(0.0, (soon - NOW()).total_seconds()) + 1.5)
s3.delete_object(Bucket=B, Key="c", VersionId=v2)
ok("compliance retention")

# --- legal hold: blocks even the bypass
v3 = s3.put_object(Bucket=B, Key="h", Body=b"three")["VersionId"]
s3.put_object_legal_hold(Bucket=B, Key="h", VersionId=v3, LegalHold={"Status": "ON"})
eq(s3.get_object_legal_hold(Bucket=B, Key="h", VersionId=v3)["LegalHold"]["Status"], "ON",
   "hold on")
eq(s3.head_object(Bucket=B, Key="h").get("ObjectLockLegalHoldStatus"), "ON", "HEAD hold")
expect_error("AccessDenied", s3.delete_object, Bucket=B, Key="h", VersionId=v3,
             BypassGovernanceRetention=True, status=403)
s3.put_object_legal_hold(Bucket=B, Key="h", VersionId=v3, LegalHold={"Status": "OFF"})
s3.delete_object(Bucket=B, Key="h", VersionId=v3, BypassGovernanceRetention=True)
ok("legal hold")
print("ALL OK")
