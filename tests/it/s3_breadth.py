"""boto3 against the Cairn S3 gateway: the issue 13 ("S3 breadth")
operations: bucket versioning status, object tagging, GetObjectAttributes.
Run by tests/it/s3.rs with S3_ENDPOINT, S3_KEY, S3_SECRET in the
environment. Prints one line per check; exits non-zero on the first
failure."""

import os
import urllib.error
import urllib.request

import boto3
import botocore
from botocore.config import Config

ENDPOINT = os.environ["S3_ENDPOINT"]

s3 = boto3.client(
    "s3",
    endpoint_url=ENDPOINT,
    aws_access_key_id=os.environ["S3_KEY"],
    aws_secret_access_key=os.environ["S3_SECRET"],
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                  retries={"max_attempts": 1}),
)


def ok(name):
    print("ok", name, flush=True)


def expect_error(code, fn, *args, status=None, **kwargs):
    try:
        fn(*args, **kwargs)
    except botocore.exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        if got != code:
            raise AssertionError(f"expected {code}, got {got}: {e}")
        st = e.response["ResponseMetadata"]["HTTPStatusCode"]
        if status is not None and st != status:
            raise AssertionError(f"expected status {status} for {code}, got {st}")
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


def raw(op, params, method="GET"):
    """A presigned request sent with urllib: (status, headers, body)."""
    url = s3.generate_presigned_url(op, Params=params, HttpMethod=method)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method)) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


s3.create_bucket(Bucket="breadth")

# --- versioning: never enabled
v = s3.get_bucket_versioning(Bucket="breadth")
eq(v.get("Status"), None, "versioning status")
st, _, body = raw("get_bucket_versioning", {"Bucket": "breadth"})
eq(st, 200, "GetBucketVersioning status")
# S3 writes the empty element self-closed; s3s with an end tag: the same XML.
eq(body.replace(b'<?xml version="1.0" encoding="UTF-8"?>', b"").replace(
       b"></VersioningConfiguration>", b"/>"),
   b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>',
   "GetBucketVersioning body")
# Enabling it is tested by s3_versioning.py (it changes the bucket for good).
expect_error("NoSuchBucket", s3.get_bucket_versioning, Bucket="no-such-bucket", status=404)
ok("bucket versioning")

# --- object tagging
s3.put_object(Bucket="breadth", Key="t/plain", Body=b"x")
eq(s3.get_object_tagging(Bucket="breadth", Key="t/plain")["TagSet"], [], "no tags")
r = s3.get_object(Bucket="breadth", Key="t/plain")
eq(r["ResponseMetadata"]["HTTPHeaders"].get("x-amz-tagging-count"), None, "no tag count")

tags = [{"Key": "project", "Value": "cairn"}, {"Key": "a b", "Value": "c&d=e"}]
s3.put_object_tagging(Bucket="breadth", Key="t/plain", Tagging={"TagSet": tags})
got = s3.get_object_tagging(Bucket="breadth", Key="t/plain")["TagSet"]
eq(sorted(got, key=lambda t: t["Key"]), sorted(tags, key=lambda t: t["Key"]), "tags back")
r = s3.get_object(Bucket="breadth", Key="t/plain")
eq(r["ResponseMetadata"]["HTTPHeaders"].get("x-amz-tagging-count"), "2", "tag count")
eq(r["TagCount"], 2, "TagCount")
eq(r["Body"].read(), b"x", "body unchanged by tagging")

st, _, body = raw("get_object_tagging", {"Bucket": "breadth", "Key": "t/plain"})
eq(st, 200, "GetObjectTagging status")
if b"<Tagging" not in body or b"<TagSet><Tag><Key>a b</Key><Value>c&amp;d=e</Value></Tag>" not in body:
    raise AssertionError(f"GetObjectTagging XML: {body!r}")

# An overwrite drops the tags (they belong to the replaced object).
s3.put_object(Bucket="breadth", Key="t/plain", Body=b"y")
eq(s3.get_object_tagging(Bucket="breadth", Key="t/plain")["TagSet"], [], "overwrite drops tags")

d = s3.delete_object_tagging(Bucket="breadth", Key="t/plain")
eq(d["ResponseMetadata"]["HTTPStatusCode"], 204, "DeleteObjectTagging status")
expect_error("NoSuchKey", s3.get_object_tagging, Bucket="breadth", Key="t/missing", status=404)
expect_error("NoSuchKey", s3.put_object_tagging, Bucket="breadth", Key="t/missing",
             Tagging={"TagSet": tags}, status=404)

# Limits.
eleven = [{"Key": f"k{i}", "Value": "v"} for i in range(11)]
expect_error("BadRequest", s3.put_object_tagging, Bucket="breadth", Key="t/plain",
             Tagging={"TagSet": eleven}, status=400)
ten = eleven[:10]
s3.put_object_tagging(Bucket="breadth", Key="t/plain", Tagging={"TagSet": ten})
expect_error("InvalidTag", s3.put_object_tagging, Bucket="breadth", Key="t/plain",
             Tagging={"TagSet": [{"Key": "k" * 129, "Value": "v"}]}, status=400)
expect_error("InvalidTag", s3.put_object_tagging, Bucket="breadth", Key="t/plain",
             Tagging={"TagSet": [{"Key": "k", "Value": "v" * 257}]}, status=400)
expect_error("InvalidTag", s3.put_object_tagging, Bucket="breadth", Key="t/plain",
             Tagging={"TagSet": [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]},
             status=400)
s3.put_object_tagging(Bucket="breadth", Key="t/plain",
                      Tagging={"TagSet": [{"Key": "\U0001F600" * 64, "Value": "v" * 256}]})
eq(len(s3.get_object_tagging(Bucket="breadth", Key="t/plain")["TagSet"]), 1, "limit tags")
expect_error("InvalidArgument", s3.get_object_tagging, Bucket="breadth", Key="t/plain",
             VersionId="3HL4kqtJlcpXroDTDmjVBH40Nrjfkd", status=400)
ok("object tagging")

# x-amz-tagging on PutObject, CreateMultipartUpload; CopyObject directive.
s3.put_object(Bucket="breadth", Key="t/hdr", Body=b"h", Tagging="x=1&y=two%20words")
eq(sorted((t["Key"], t["Value"]) for t in
          s3.get_object_tagging(Bucket="breadth", Key="t/hdr")["TagSet"]),
   [("x", "1"), ("y", "two words")], "x-amz-tagging on PutObject")
expect_error("InvalidTag", s3.put_object, Bucket="breadth", Key="t/bad", Body=b"b",
             Tagging="a=1&a=2", status=400)

s3.copy_object(Bucket="breadth", Key="t/copy", CopySource={"Bucket": "breadth", "Key": "t/hdr"})
eq(len(s3.get_object_tagging(Bucket="breadth", Key="t/copy")["TagSet"]), 2, "COPY keeps tags")
s3.copy_object(Bucket="breadth", Key="t/copy2", CopySource={"Bucket": "breadth", "Key": "t/hdr"},
               TaggingDirective="REPLACE", Tagging="only=me")
eq(s3.get_object_tagging(Bucket="breadth", Key="t/copy2")["TagSet"],
   [{"Key": "only", "Value": "me"}], "REPLACE sets tags")
s3.copy_object(Bucket="breadth", Key="t/copy3", CopySource={"Bucket": "breadth", "Key": "t/hdr"},
               TaggingDirective="REPLACE")
eq(s3.get_object_tagging(Bucket="breadth", Key="t/copy3")["TagSet"], [], "REPLACE without tags")

u = s3.create_multipart_upload(Bucket="breadth", Key="t/mp", Tagging="mp=yes")
p = s3.upload_part(Bucket="breadth", Key="t/mp", UploadId=u["UploadId"], PartNumber=1, Body=b"m" * 100)
s3.complete_multipart_upload(Bucket="breadth", Key="t/mp", UploadId=u["UploadId"],
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]})
eq(s3.get_object_tagging(Bucket="breadth", Key="t/mp")["TagSet"],
   [{"Key": "mp", "Value": "yes"}], "x-amz-tagging on CreateMultipartUpload")
expect_error("InvalidTag", s3.create_multipart_upload, Bucket="breadth", Key="t/mp2",
             Tagging="aws:x=1", status=400)
ok("x-amz-tagging on put, multipart and copy")

# --- GetObjectAttributes
import base64
import hashlib
import zlib


def crc32_b64(b):
    return base64.b64encode(zlib.crc32(b).to_bytes(4, "big")).decode()


ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
s3.put_object(Bucket="breadth", Key="a/single", Body=b"hello", ChecksumAlgorithm="CRC32")
a = s3.get_object_attributes(Bucket="breadth", Key="a/single", ObjectAttributes=ALL)
eq(a["ObjectSize"], 5, "ObjectSize")
eq(a["StorageClass"], "STANDARD", "StorageClass")
eq(a["ETag"].strip('"'), hashlib.md5(b"hello").hexdigest(), "ETag")
eq(a["Checksum"]["ChecksumCRC32"], crc32_b64(b"hello"), "ChecksumCRC32")
eq(a["Checksum"]["ChecksumType"], "FULL_OBJECT", "ChecksumType")
eq("ObjectParts" in a, False, "no ObjectParts on a single-part object")
eq(a["ResponseMetadata"]["HTTPHeaders"].get("last-modified") is not None, True, "Last-Modified")
a = s3.get_object_attributes(Bucket="breadth", Key="a/single", ObjectAttributes=["ObjectSize"])
eq(("ETag" in a, "Checksum" in a, "StorageClass" in a, a["ObjectSize"]), (False, False, False, 5),
   "only what was asked")
# A multipart object without a checksum: PartsCount only.
a = s3.get_object_attributes(Bucket="breadth", Key="t/mp", ObjectAttributes=ALL)
eq(a["ObjectParts"], {"TotalPartsCount": 1}, "ObjectParts without checksum")
eq("Checksum" in a, False, "no Checksum")
# With CRC32 parts: the part list, paginated.
p1, p2 = b"1" * (5 << 20), b"2" * 1000
u = s3.create_multipart_upload(Bucket="breadth", Key="a/mp", ChecksumAlgorithm="CRC32")
parts = []
for n, b in ((1, p1), (2, p2)):
    r = s3.upload_part(Bucket="breadth", Key="a/mp", UploadId=u["UploadId"], PartNumber=n, Body=b,
                       ChecksumAlgorithm="CRC32")
    parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
s3.complete_multipart_upload(Bucket="breadth", Key="a/mp", UploadId=u["UploadId"],
                             MultipartUpload={"Parts": parts})
a = s3.get_object_attributes(Bucket="breadth", Key="a/mp", ObjectAttributes=ALL, MaxParts=1)
op = a["ObjectParts"]
eq((op["TotalPartsCount"], op["MaxParts"], op["IsTruncated"], op["NextPartNumberMarker"]),
   (2, 1, True, 1), "first page")
eq(op["Parts"], [{"PartNumber": 1, "Size": 5 << 20, "ChecksumCRC32": crc32_b64(p1)}], "part 1")
eq(a["Checksum"]["ChecksumType"], "COMPOSITE", "multipart checksum type")
eq(a["Checksum"]["ChecksumCRC32"].endswith("-2"), True, "composite -N")
eq(a["ObjectSize"], len(p1) + len(p2), "multipart size")
a = s3.get_object_attributes(Bucket="breadth", Key="a/mp", ObjectAttributes=["ObjectParts"],
                             PartNumberMarker=1)
op = a["ObjectParts"]
eq((op["IsTruncated"], op["PartNumberMarker"], [p["PartNumber"] for p in op["Parts"]]),
   (False, 1, [2]), "second page")
expect_error("NoSuchKey", s3.get_object_attributes, Bucket="breadth", Key="a/missing",
             ObjectAttributes=ALL, status=404)
expect_error("InvalidArgument", s3.get_object_attributes, Bucket="breadth", Key="a/single",
             ObjectAttributes=["Bogus"], status=400)
ok("get object attributes")

# --- ACLs: owner FULL_CONTROL only; other ACLs refused, never ignored
owner = s3.get_bucket_acl(Bucket="breadth")
eq([(g["Grantee"]["Type"], g["Permission"]) for g in owner["Grants"]],
   [("CanonicalUser", "FULL_CONTROL")], "bucket ACL")
eq(owner["Grants"][0]["Grantee"]["ID"], owner["Owner"]["ID"], "the owner holds it")
acl = s3.get_object_acl(Bucket="breadth", Key="a/single")
eq([g["Permission"] for g in acl["Grants"]], ["FULL_CONTROL"], "object ACL")
expect_error("NoSuchKey", s3.get_object_acl, Bucket="breadth", Key="a/missing", status=404)
s3.put_object(Bucket="breadth", Key="acl/private", Body=b"p", ACL="private")
s3.put_object(Bucket="breadth", Key="acl/bofc", Body=b"p", ACL="bucket-owner-full-control")
for canned in ("public-read", "public-read-write", "authenticated-read"):
    expect_error("NotImplemented", s3.put_object, Bucket="breadth", Key="acl/public",
                 Body=b"p", ACL=canned, status=501)
    expect_error("NotImplemented", s3.put_object_acl, Bucket="breadth", Key="acl/private",
                 ACL=canned, status=501)
expect_error("404", s3.head_object, Bucket="breadth", Key="acl/public", status=404)
expect_error("NotImplemented", s3.put_object, Bucket="breadth", Key="acl/grant", Body=b"p",
             GrantRead='uri="http://acs.amazonaws.com/groups/global/AllUsers"', status=501)
expect_error("NotImplemented", s3.create_bucket, Bucket="breadth-public", ACL="public-read",
             status=501)
expect_error("404", s3.head_bucket, Bucket="breadth-public", status=404)
s3.put_bucket_acl(Bucket="breadth", ACL="private")
s3.put_object_acl(Bucket="breadth", Key="acl/private", ACL="private")
s3.put_bucket_acl(Bucket="breadth", AccessControlPolicy={
    "Owner": owner["Owner"], "Grants": owner["Grants"]})
expect_error("NotImplemented", s3.put_bucket_acl, Bucket="breadth", AccessControlPolicy={
    "Owner": owner["Owner"], "Grants": owner["Grants"] + [{
        "Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
        "Permission": "READ"}]}, status=501)
ok("ACLs")

print("ALL OK", flush=True)
