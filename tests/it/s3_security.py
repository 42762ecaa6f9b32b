"""boto3 against the Cairn S3 gateway: issue 14's request hygiene.
Server-side encryption is refused with 501 (never silently ignored) and
nothing is stored; SigV2 is refused; SigV4 clock skew, presigned lifetime
and expiry are enforced. Run by tests/it/s3.rs with S3_ENDPOINT, S3_KEY,
S3_SECRET in the environment. Prints one line per check; exits non-zero on
the first failure."""

import contextlib
import datetime
import os
import time
import urllib.error
import urllib.request

import boto3
import botocore
import botocore.auth
from botocore.config import Config

ENDPOINT = os.environ["S3_ENDPOINT"]


def client(sig="s3v4"):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=os.environ["S3_KEY"],
        aws_secret_access_key=os.environ["S3_SECRET"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version=sig,
                      retries={"max_attempts": 1}),
    )


s3 = client()


def ok(name):
    print("ok", name, flush=True)


def expect_error(code, fn, *args, status=None, **kwargs):
    try:
        fn(*args, **kwargs)
    except botocore.exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        st = e.response["ResponseMetadata"]["HTTPStatusCode"]
        # HEAD answers have no body: botocore names the error by status.
        if got != code and got != str(status):
            raise AssertionError(f"expected {code}, got {got}: {e}")
        if status is not None and st != status:
            raise AssertionError(f"expected status {status} for {code}, got {st}")
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


def fetch(url, method="GET", data=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, data=data)) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def absent(key):
    expect_error("NoSuchKey", s3.head_object, Bucket="sec", Key=key, status=404)


@contextlib.contextmanager
def clock_off(minutes):
    """Signs with a clock `minutes` off the real one."""
    real = botocore.auth.get_current_datetime

    def shifted(*a, **kw):
        return real(*a, **kw) + datetime.timedelta(minutes=minutes)

    botocore.auth.get_current_datetime = shifted
    try:
        yield
    finally:
        botocore.auth.get_current_datetime = real


s3.create_bucket(Bucket="sec")
s3.put_object(Bucket="sec", Key="plain", Body=b"plaintext object")
KEY = b"k" * 32
SSEC = dict(SSECustomerAlgorithm="AES256", SSECustomerKey=KEY)
COPY_SSEC = dict(CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=KEY)

# --- SSE refused on every operation, nothing stored ---
for what, extra in [
    ("SSE-S3", dict(ServerSideEncryption="AES256")),
    ("SSE-KMS", dict(ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/x")),
    ("SSE-KMS context", dict(ServerSideEncryption="aws:kms", SSEKMSEncryptionContext="e30=")),
    ("bucket key", dict(BucketKeyEnabled=True)),
    ("SSE-C", SSEC),
]:
    e = expect_error("NotImplemented", s3.put_object, Bucket="sec", Key="enc", Body=b"secret",
                     status=501, **extra)
    if "encryption" not in e.response["Error"].get("Message", ""):
        raise AssertionError(f"unclear message: {e.response['Error']}")
    absent("enc")
    expect_error("NotImplemented", s3.copy_object, Bucket="sec", Key="enc-copy",
                 CopySource={"Bucket": "sec", "Key": "plain"}, status=501, **extra)
    absent("enc-copy")
    expect_error("NotImplemented", s3.create_multipart_upload, Bucket="sec", Key="enc-mp",
                 status=501, **extra)
    ok(f"{what}: PutObject, CopyObject, CreateMultipartUpload refused with 501")
eq(s3.list_multipart_uploads(Bucket="sec").get("Uploads", []), [], "uploads after refusals")

expect_error("NotImplemented", s3.copy_object, Bucket="sec", Key="enc-copy",
             CopySource={"Bucket": "sec", "Key": "plain"}, status=501, **COPY_SSEC)
absent("enc-copy")
u = s3.create_multipart_upload(Bucket="sec", Key="mp")["UploadId"]
expect_error("NotImplemented", s3.upload_part, Bucket="sec", Key="mp", UploadId=u, PartNumber=1,
             Body=b"part", status=501, **SSEC)
expect_error("NotImplemented", s3.upload_part_copy, Bucket="sec", Key="mp", UploadId=u,
             PartNumber=1, CopySource={"Bucket": "sec", "Key": "plain"}, status=501, **COPY_SSEC)
expect_error("NotImplemented", s3.upload_part_copy, Bucket="sec", Key="mp", UploadId=u,
             PartNumber=1, CopySource={"Bucket": "sec", "Key": "plain"}, status=501, **SSEC)
eq(s3.list_parts(Bucket="sec", Key="mp", UploadId=u).get("Parts", []), [], "parts after refusals")
s3.abort_multipart_upload(Bucket="sec", Key="mp", UploadId=u)
ok("UploadPart, UploadPartCopy with SSE-C refused with 501, no part stored")

expect_error("NotImplemented", s3.get_object, Bucket="sec", Key="plain", status=501, **SSEC)
expect_error("NotImplemented", s3.head_object, Bucket="sec", Key="plain", status=501, **SSEC)
eq(s3.get_object(Bucket="sec", Key="plain")["Body"].read(), b"plaintext object", "plain GET")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="sec").get("Contents", [])]
eq(keys, ["plain"], "objects after every refusal")
ok("GetObject, HeadObject with SSE-C refused with 501; only the plain object exists")

# --- bucket default encryption ---
expect_error("ServerSideEncryptionConfigurationNotFoundError", s3.get_bucket_encryption,
             Bucket="sec", status=404)
expect_error("NotImplemented", s3.put_bucket_encryption, Bucket="sec",
             ServerSideEncryptionConfiguration={"Rules": [
                 {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
             status=501)
expect_error("ServerSideEncryptionConfigurationNotFoundError", s3.get_bucket_encryption,
             Bucket="sec", status=404)
r = s3.delete_bucket_encryption(Bucket="sec")
eq(r["ResponseMetadata"]["HTTPStatusCode"], 204, "DeleteBucketEncryption status")
expect_error("NoSuchBucket", s3.get_bucket_encryption, Bucket="no-such-bucket", status=404)
ok("bucket encryption: Get 404 (no configuration), Put 501, Delete 204")

# --- SigV2 refused ---
v2 = client("s3")
e = expect_error("AccessDenied", v2.get_object, Bucket="sec", Key="plain", status=403)
if "Version 2" not in e.response["Error"].get("Message", ""):
    raise AssertionError(f"unclear SigV2 message: {e.response['Error']}")
expect_error("AccessDenied", v2.put_object, Bucket="sec", Key="v2", Body=b"x", status=403)
absent("v2")
st, _ = fetch(v2.generate_presigned_url("get_object", Params={"Bucket": "sec", "Key": "plain"}))
eq(st, 403, "SigV2 presigned GET")
ok("SigV2 (header and presigned) refused with 403")

# --- SigV4 clock skew ---
for minutes in (-20, 20):
    with clock_off(minutes):
        skewed = client()
        expect_error("RequestTimeTooSkewed", skewed.get_object, Bucket="sec", Key="plain",
                     status=403)
        expect_error("RequestTimeTooSkewed", skewed.put_object, Bucket="sec", Key="skew",
                     Body=b"x", status=403)
    absent("skew")
with clock_off(10):
    eq(client().get_object(Bucket="sec", Key="plain")["Body"].read(), b"plaintext object",
       "10 minutes off")
with clock_off(20):
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "sec", "Key": "plain"})
st, body = fetch(url)
eq(st, 403, "presigned URL dated 20 minutes ahead")
if b"RequestTimeTooSkewed" not in body:
    raise AssertionError(f"presigned skew: {body!r}")
ok("SigV4 20 minutes off refused (RequestTimeTooSkewed), 10 minutes accepted")

# --- presigned lifetime ---
get = {"Bucket": "sec", "Key": "plain"}
st, body = fetch(s3.generate_presigned_url("get_object", Params=get, ExpiresIn=604800))
eq((st, body), (200, b"plaintext object"), "7-day presigned GET")
st, body = fetch(s3.generate_presigned_url("get_object", Params=get, ExpiresIn=604801))
eq(st, 400, "presigned X-Amz-Expires over 7 days")
if b"AuthorizationQueryParametersError" not in body:
    raise AssertionError(f"over 7 days: {body!r}")
url = s3.generate_presigned_url("put_object", Params={"Bucket": "sec", "Key": "late"},
                                ExpiresIn=1)
time.sleep(2.5)
st, body = fetch(url, method="PUT", data=b"late")
eq(st, 403, "expired presigned PUT")
absent("late")
with clock_off(-30):
    url = s3.generate_presigned_url("get_object", Params=get, ExpiresIn=600)
st, body = fetch(url)
eq(st, 403, "presigned GET expired 20 minutes ago")
ok("presigned: 7 days accepted, over 7 days refused (400), expired refused (403)")

print("ALL OK", flush=True)
