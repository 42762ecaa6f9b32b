"""boto3 against the Cairn S3 gateway: every operation the gateway offers
and the error codes clients rely on. Run by tests/it/s3.rs with
S3_ENDPOINT, S3_KEY, S3_SECRET, S3_DOMAIN_PORT in the environment. Prints
one line per check; exits non-zero on the first failure."""

import base64
import datetime
import hashlib
import os
import socket
import sys
import urllib.request
import zlib

import boto3
import botocore
from botocore.config import Config

ENDPOINT = os.environ["S3_ENDPOINT"]
KEY = os.environ["S3_KEY"]
SECRET = os.environ["S3_SECRET"]
DOMAIN_PORT = os.environ["S3_DOMAIN_PORT"]


def client(key=KEY, secret=SECRET, endpoint=ENDPOINT, style="path"):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": style},
            signature_version="s3v4",
            retries={"max_attempts": 1},
        ),
    )


s3 = client()


def ok(name):
    print("ok", name, flush=True)


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except botocore.exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        if got != code:
            raise AssertionError(f"expected {code}, got {got}: {e}")
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


def md5(b):
    return hashlib.md5(b).hexdigest()


def body(resp):
    return resp["Body"].read()


# Buckets.
s3.create_bucket(Bucket="boto")
s3.head_bucket(Bucket="boto")
assert "boto" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
s3.get_bucket_location(Bucket="boto")
expect_error("BucketAlreadyOwnedByYou", s3.create_bucket, Bucket="boto")
expect_error("InvalidBucketName", s3.create_bucket, Bucket="Bad_Name")
expect_error("NoSuchBucket", s3.list_objects_v2, Bucket="missing-bucket")
ok("buckets")


def add_ec_header(request, **kwargs):
    request.headers["x-cairn-ec"] = "3+2"


s3.meta.events.register("before-sign.s3.CreateBucket", add_ec_header)
s3.create_bucket(Bucket="ecb")
s3.meta.events.unregister("before-sign.s3.CreateBucket", add_ec_header)
ok("x-cairn-ec")

# Objects, metadata and headers.
data = os.urandom(100_000)
r = s3.put_object(
    Bucket="boto",
    Key="dir/obj",
    Body=data,
    ContentType="text/x-test",
    CacheControl="max-age=60",
    ContentDisposition='attachment; filename="x.bin"',
    ContentLanguage="en",
    Metadata={"color": "blue", "n": "1"},
)
assert r["ETag"] == f'"{md5(data)}"', r["ETag"]
g = s3.get_object(Bucket="boto", Key="dir/obj")
assert body(g) == data
assert g["ContentType"] == "text/x-test"
assert g["CacheControl"] == "max-age=60"
assert g["ContentDisposition"] == 'attachment; filename="x.bin"'
assert g["Metadata"] == {"color": "blue", "n": "1"}, g["Metadata"]
h = s3.head_object(Bucket="boto", Key="dir/obj")
assert h["ContentLength"] == len(data) and h["ETag"] == r["ETag"]
o = s3.get_object(Bucket="boto", Key="dir/obj", ResponseContentType="x/y", ResponseCacheControl="no-cache")
assert o["ContentType"] == "x/y" and o["CacheControl"] == "no-cache"
expect_error("NoSuchKey", s3.get_object, Bucket="boto", Key="nope")
expect_error("404", s3.head_object, Bucket="boto", Key="nope")
ok("put/get/head with metadata")

# Ranges.
assert body(s3.get_object(Bucket="boto", Key="dir/obj", Range="bytes=2-5")) == data[2:6]
assert body(s3.get_object(Bucket="boto", Key="dir/obj", Range="bytes=-3")) == data[-3:]
assert body(s3.get_object(Bucket="boto", Key="dir/obj", Range="bytes=99990-")) == data[99990:]
g = s3.get_object(Bucket="boto", Key="dir/obj", Range="bytes=10-19")
assert g["ContentRange"] == f"bytes 10-19/{len(data)}", g["ContentRange"]
expect_error("InvalidRange", s3.get_object, Bucket="boto", Key="dir/obj", Range="bytes=200000-300000")
ok("ranges")

# Conditional reads.
etag = r["ETag"]
past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
assert body(s3.get_object(Bucket="boto", Key="dir/obj", IfMatch=etag)) == data
expect_error("PreconditionFailed", s3.get_object, Bucket="boto", Key="dir/obj", IfMatch='"0000"')
expect_error("304", s3.get_object, Bucket="boto", Key="dir/obj", IfNoneMatch=etag)
expect_error("304", s3.get_object, Bucket="boto", Key="dir/obj", IfModifiedSince=future)
expect_error("PreconditionFailed", s3.get_object, Bucket="boto", Key="dir/obj", IfUnmodifiedSince=past)
assert body(s3.get_object(Bucket="boto", Key="dir/obj", IfModifiedSince=past)) == data
ok("conditional reads")

# Conditional writes.
expect_error("PreconditionFailed", s3.put_object, Bucket="boto", Key="dir/obj", Body=b"x", IfNoneMatch="*")
s3.put_object(Bucket="boto", Key="dir/new", Body=b"first", IfNoneMatch="*")
expect_error("PreconditionFailed", s3.put_object, Bucket="boto", Key="dir/new", Body=b"x", IfMatch='"0000"')
s3.put_object(Bucket="boto", Key="dir/new", Body=b"second", IfMatch=f'"{md5(b"first")}"')
assert body(s3.get_object(Bucket="boto", Key="dir/new")) == b"second"
ok("conditional writes")

# Checksums.
crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
s3.put_object(Bucket="boto", Key="ck/crc", Body=data, ChecksumCRC32=crc)
s3.put_object(Bucket="boto", Key="ck/sha", Body=data, ChecksumSHA256=sha)
h = s3.head_object(Bucket="boto", Key="ck/crc", ChecksumMode="ENABLED")
assert h.get("ChecksumCRC32") == crc, h
h = s3.get_object(Bucket="boto", Key="ck/sha", ChecksumMode="ENABLED")
assert h.get("ChecksumSHA256") == sha, h
assert body(h) == data
bad = base64.b64encode((zlib.crc32(data) ^ 1).to_bytes(4, "big")).decode()
expect_error("BadDigest", s3.put_object, Bucket="boto", Key="ck/bad", Body=data, ChecksumCRC32=bad)
expect_error("404", s3.head_object, Bucket="boto", Key="ck/bad")
expect_error("BadDigest", s3.put_object, Bucket="boto", Key="ck/bad", Body=data,
             ContentMD5=base64.b64encode(hashlib.md5(b"other").digest()).decode())
expect_error("404", s3.head_object, Bucket="boto", Key="ck/bad")
ok("checksums")

# Listing.
for i in range(5):
    s3.put_object(Bucket="boto", Key=f"list/k{i}", Body=b"x")
s3.put_object(Bucket="boto", Key="list/sub/a b+c", Body=b"x")
keys, token = [], None
while True:
    kw = {"ContinuationToken": token} if token else {}
    p = s3.list_objects_v2(Bucket="boto", Prefix="list/", MaxKeys=2, **kw)
    keys += [c["Key"] for c in p.get("Contents", [])]
    if not p["IsTruncated"]:
        break
    token = p["NextContinuationToken"]
assert keys == [f"list/k{i}" for i in range(5)] + ["list/sub/a b+c"], keys
p = s3.list_objects_v2(Bucket="boto", Prefix="list/", Delimiter="/")
assert [c["Prefix"] for c in p["CommonPrefixes"]] == ["list/sub/"], p
assert len(p["Contents"]) == 5
p = s3.list_objects_v2(Bucket="boto", Prefix="list/", StartAfter="list/k3", FetchOwner=True)
assert [c["Key"] for c in p["Contents"]] == ["list/k4", "list/sub/a b+c"], p
assert "Owner" in p["Contents"][0]
p = s3.list_objects_v2(Bucket="boto", Prefix="list/sub/", EncodingType="url")
assert p["Contents"][0]["Key"] in ("list/sub/a b+c", "list/sub/a%20b%2Bc"), p
p = s3.list_objects(Bucket="boto", Prefix="list/", Marker="list/k1", MaxKeys=2)
assert [c["Key"] for c in p["Contents"]] == ["list/k2", "list/k3"], p
assert p["IsTruncated"]
ok("listing")

# DeleteObjects.
r = s3.delete_objects(Bucket="boto", Delete={"Objects": [{"Key": f"list/k{i}"} for i in range(5)]})
assert len(r["Deleted"]) == 5
assert [c["Key"] for c in s3.list_objects_v2(Bucket="boto", Prefix="list/")["Contents"]] == ["list/sub/a b+c"]
ok("delete objects")

# CopyObject.
c = s3.copy_object(Bucket="boto", Key="copy/same", CopySource={"Bucket": "boto", "Key": "dir/obj"})
assert c["CopyObjectResult"]["ETag"] == etag
g = s3.get_object(Bucket="boto", Key="copy/same")
assert body(g) == data and g["Metadata"] == {"color": "blue", "n": "1"} and g["ContentType"] == "text/x-test"
s3.copy_object(Bucket="ecb", Key="copy/replaced", CopySource={"Bucket": "boto", "Key": "dir/obj"},
               MetadataDirective="REPLACE", Metadata={"color": "red"}, ContentType="a/b")
g = s3.get_object(Bucket="ecb", Key="copy/replaced")
assert body(g) == data and g["Metadata"] == {"color": "red"} and g["ContentType"] == "a/b"
expect_error("PreconditionFailed", s3.copy_object, Bucket="boto", Key="copy/x",
             CopySource={"Bucket": "boto", "Key": "dir/obj"}, CopySourceIfMatch='"0000"')
expect_error("NoSuchKey", s3.copy_object, Bucket="boto", Key="copy/x",
             CopySource={"Bucket": "boto", "Key": "nope"})
ok("copy object")

# Multipart.
p1 = os.urandom(5 * 1024 * 1024 + 17)
p2 = os.urandom(1000)
u = s3.create_multipart_upload(Bucket="boto", Key="mp/obj", ContentType="x/mp", Metadata={"m": "1"})
uid = u["UploadId"]
e1 = s3.upload_part(Bucket="boto", Key="mp/obj", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
e2 = s3.upload_part(Bucket="boto", Key="mp/obj", UploadId=uid, PartNumber=2, Body=p2)["ETag"]
lp = s3.list_parts(Bucket="boto", Key="mp/obj", UploadId=uid)
assert [(p["PartNumber"], p["Size"]) for p in lp["Parts"]] == [(1, len(p1)), (2, len(p2))], lp
lu = s3.list_multipart_uploads(Bucket="boto")
assert uid in [x["UploadId"] for x in lu.get("Uploads", [])], lu
expect_error("InvalidPart", s3.complete_multipart_upload, Bucket="boto", Key="mp/obj", UploadId=uid,
             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]})
expect_error("InvalidPartOrder", s3.complete_multipart_upload, Bucket="boto", Key="mp/obj", UploadId=uid,
             MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})
done = s3.complete_multipart_upload(Bucket="boto", Key="mp/obj", UploadId=uid,
                                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1},
                                                               {"PartNumber": 2, "ETag": e2}]})
want = hashlib.md5(bytes.fromhex(e1.strip('"')) + bytes.fromhex(e2.strip('"'))).hexdigest() + "-2"
assert done["ETag"] == f'"{want}"', (done["ETag"], want)
g = s3.get_object(Bucket="boto", Key="mp/obj")
assert body(g) == p1 + p2 and g["ContentType"] == "x/mp" and g["Metadata"] == {"m": "1"}
start = len(p1) - 10
assert body(s3.get_object(Bucket="boto", Key="mp/obj", Range=f"bytes={start}-{start + 19}")) == (p1 + p2)[start:start + 20]
expect_error("NoSuchUpload", s3.list_parts, Bucket="boto", Key="mp/obj", UploadId=uid)
ok("multipart")

# GetObject/HeadObject by partNumber.
g = s3.get_object(Bucket="boto", Key="mp/obj", PartNumber=2)
assert body(g) == p2 and g["PartsCount"] == 2, g
assert g["ResponseMetadata"]["HTTPStatusCode"] == 206
assert g["ContentRange"] == f"bytes {len(p1)}-{len(p1) + len(p2) - 1}/{len(p1) + len(p2)}", g["ContentRange"]
h = s3.head_object(Bucket="boto", Key="mp/obj", PartNumber=1)
assert h["ContentLength"] == len(p1) and h["PartsCount"] == 2, h
expect_error("InvalidPartNumber", s3.get_object, Bucket="boto", Key="mp/obj", PartNumber=3)
ok("get by part number")


def crc32_b64(b):
    return base64.b64encode(zlib.crc32(b).to_bytes(4, "big")).decode()


def sha256_b64(b):
    return base64.b64encode(hashlib.sha256(b).digest()).decode()


# Multipart checksums: COMPOSITE (checksum of the part checksums, -N) and
# FULL_OBJECT (the CRC of the whole object).
for algo, ctype, part_ck, whole in [
    ("SHA256", "COMPOSITE", sha256_b64,
     lambda parts: base64.b64encode(hashlib.sha256(b"".join(base64.b64decode(sha256_b64(x)) for x in parts)).digest()).decode() + f"-{len(parts)}"),
    ("CRC32", "COMPOSITE", crc32_b64,
     lambda parts: crc32_b64(b"".join(base64.b64decode(crc32_b64(x)) for x in parts)) + f"-{len(parts)}"),
    ("CRC32", "FULL_OBJECT", crc32_b64, lambda parts: crc32_b64(b"".join(parts))),
]:
    key = f"mp/ck-{algo}-{ctype}"
    u = s3.create_multipart_upload(Bucket="boto", Key=key, ChecksumAlgorithm=algo, ChecksumType=ctype)
    uid = u["UploadId"]
    parts = [p1, p2]
    listed = []
    for n, part in enumerate(parts, 1):
        r = s3.upload_part(Bucket="boto", Key=key, UploadId=uid, PartNumber=n, Body=part, ChecksumAlgorithm=algo)
        assert r[f"Checksum{algo}"] == part_ck(part), (r, algo)
        listed.append({"PartNumber": n, "ETag": r["ETag"], f"Checksum{algo}": r[f"Checksum{algo}"]})
    want = whole(parts)
    extra = {}
    if ctype == "FULL_OBJECT":
        # A wrong whole-object value is a BadDigest, and nothing completes.
        expect_error("BadDigest", s3.complete_multipart_upload, Bucket="boto", Key=key, UploadId=uid,
                     MultipartUpload={"Parts": listed}, ChecksumCRC32=crc32_b64(b"wrong"), ChecksumType=ctype)
        extra = {"ChecksumCRC32": want, "ChecksumType": ctype}
    done = s3.complete_multipart_upload(Bucket="boto", Key=key, UploadId=uid, MultipartUpload={"Parts": listed}, **extra)
    assert done[f"Checksum{algo}"] == want, (done, want)
    h = s3.head_object(Bucket="boto", Key=key, ChecksumMode="ENABLED")
    assert h[f"Checksum{algo}"] == want and h["ChecksumType"] == ctype, (h, want)
    assert body(s3.get_object(Bucket="boto", Key=key)) == p1 + p2
expect_error("InvalidRequest", s3.create_multipart_upload, Bucket="boto", Key="mp/bad",
             ChecksumAlgorithm="SHA256", ChecksumType="FULL_OBJECT")
ok("multipart checksums (COMPOSITE and FULL_OBJECT)")

u = s3.create_multipart_upload(Bucket="boto", Key="mp/small")
uid = u["UploadId"]
a = s3.upload_part(Bucket="boto", Key="mp/small", UploadId=uid, PartNumber=1, Body=b"a" * 1000)["ETag"]
b = s3.upload_part(Bucket="boto", Key="mp/small", UploadId=uid, PartNumber=2, Body=b"b" * 1000)["ETag"]
expect_error("EntityTooSmall", s3.complete_multipart_upload, Bucket="boto", Key="mp/small", UploadId=uid,
             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": a}, {"PartNumber": 2, "ETag": b}]})
s3.abort_multipart_upload(Bucket="boto", Key="mp/small", UploadId=uid)
expect_error("NoSuchUpload", s3.list_parts, Bucket="boto", Key="mp/small", UploadId=uid)
assert uid not in [x["UploadId"] for x in s3.list_multipart_uploads(Bucket="boto").get("Uploads", [])]
ok("multipart abort and EntityTooSmall")

u = s3.create_multipart_upload(Bucket="boto", Key="mp/copy")
uid = u["UploadId"]
c1 = s3.upload_part_copy(Bucket="boto", Key="mp/copy", UploadId=uid, PartNumber=1,
                         CopySource={"Bucket": "boto", "Key": "mp/obj"},
                         CopySourceRange=f"bytes=0-{len(p1) - 1}")["CopyPartResult"]["ETag"]
c2 = s3.upload_part_copy(Bucket="boto", Key="mp/copy", UploadId=uid, PartNumber=2,
                         CopySource={"Bucket": "boto", "Key": "dir/obj"})["CopyPartResult"]["ETag"]
s3.complete_multipart_upload(Bucket="boto", Key="mp/copy", UploadId=uid,
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": c1},
                                                        {"PartNumber": 2, "ETag": c2}]})
assert body(s3.get_object(Bucket="boto", Key="mp/copy")) == p1 + data
ok("upload part copy")

u = s3.create_multipart_upload(Bucket="boto", Key="dir/obj")
uid = u["UploadId"]
x = s3.upload_part(Bucket="boto", Key="dir/obj", UploadId=uid, PartNumber=1, Body=b"z")["ETag"]
expect_error("PreconditionFailed", s3.complete_multipart_upload, Bucket="boto", Key="dir/obj", UploadId=uid,
             IfNoneMatch="*", MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": x}]})
s3.abort_multipart_upload(Bucket="boto", Key="dir/obj", UploadId=uid)
ok("conditional complete")

# Presigned URLs.
url = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "dir/obj"}, ExpiresIn=300)
assert urllib.request.urlopen(url).read() == data
url = s3.generate_presigned_url("put_object", Params={"Bucket": "boto", "Key": "presigned/put"}, ExpiresIn=300)
req = urllib.request.Request(url, data=b"presigned body", method="PUT")
urllib.request.urlopen(req).read()
assert body(s3.get_object(Bucket="boto", Key="presigned/put")) == b"presigned body"
ok("presigned urls")

# Authentication errors.
expect_error("SignatureDoesNotMatch", client(secret="wrong" + SECRET[5:]).list_buckets)
expect_error("InvalidAccessKeyId", client(key="CKNOSUCHKEY000000000").list_buckets)
try:
    urllib.request.urlopen(f"{ENDPOINT}/boto/dir/obj")
    raise AssertionError("anonymous read succeeded")
except urllib.error.HTTPError as e:
    assert e.code == 403, e.code
ok("auth errors")

# Virtual-host style: bucket.s3.test resolves to 127.0.0.1 in this process.
real_getaddrinfo = socket.getaddrinfo


def fake_getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str) and (host == "s3.test" or host.endswith(".s3.test")):
        host = "127.0.0.1"
    return real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = fake_getaddrinfo
v = client(endpoint=f"http://s3.test:{DOMAIN_PORT}", style="virtual")
assert body(v.get_object(Bucket="boto", Key="dir/obj")) == data
v.put_object(Bucket="boto", Key="vhost/x", Body=b"v")
assert [c["Key"] for c in v.list_objects_v2(Bucket="boto", Prefix="vhost/")["Contents"]] == ["vhost/x"]
socket.getaddrinfo = real_getaddrinfo
ok("virtual host")

# Bucket deletion.
expect_error("BucketNotEmpty", s3.delete_bucket, Bucket="boto")
s3.create_bucket(Bucket="empty-one")
s3.delete_bucket(Bucket="empty-one")
expect_error("404", s3.head_bucket, Bucket="empty-one")
ok("delete bucket")

print("ALL OK", flush=True)
sys.exit(0)
