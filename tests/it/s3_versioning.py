"""boto3 against the Cairn S3 gateway: S3 object versioning (issue 13 on
issue 12's version chain): Put/GetBucketVersioning, versions made by PUT,
CopyObject and CompleteMultipartUpload, GET/HEAD/DELETE/copy by versionId,
delete markers, ListObjectVersions with pagination and delimiter,
DeleteObjects with version ids, the null version of suspended buckets.
Run by tests/it/s3.rs with S3_ENDPOINT, S3_KEY, S3_SECRET in the
environment. Prints one line per check; exits non-zero on the first
failure."""

import os
import re
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
B = "vers"


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
        # HEAD has no body: botocore names the error by its status.
        if got != code and got != str(status):
            raise AssertionError(f"expected {code}, got {got}: {e}")
        if status is not None and st != status:
            raise AssertionError(f"expected status {status} for {code}, got {st}")
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


def raw(op, params, method="GET"):
    url = s3.generate_presigned_url(op, Params=params, HttpMethod=method)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method)) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def body(key, **kw):
    return s3.get_object(Bucket=B, Key=key, **kw)["Body"].read()


def versions(prefix="", page=1000, delimiter=None):
    """Every (key, version id, latest, is marker) in listing order, paging
    with the markers the previous page returned."""
    out, prefixes, km, vm = [], [], None, None
    while True:
        kw = {"Bucket": B, "Prefix": prefix, "MaxKeys": page}
        if delimiter:
            kw["Delimiter"] = delimiter
        if km is not None:
            kw["KeyMarker"] = km
            if vm is not None:
                kw["VersionIdMarker"] = vm
        r = s3.list_object_versions(**kw)
        items = [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in r.get("Versions", [])]
        items += [(d["Key"], d["VersionId"], d["IsLatest"], True) for d in r.get("DeleteMarkers", [])]
        # One page holds one key's versions newest first; versions and
        # markers come in two lists, so order them as the chain does.
        out += items
        prefixes += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        if len(items) + len(r.get("CommonPrefixes", [])) > page:
            raise AssertionError(f"page of {page} held more: {r}")
        if not r["IsTruncated"]:
            return out, prefixes
        km, vm = r.get("NextKeyMarker"), r.get("NextVersionIdMarker")


VID = re.compile(r"^[0-9a-f]{32}$")

s3.create_bucket(Bucket=B)
eq(s3.get_bucket_versioning(Bucket=B).get("Status"), None, "never enabled")
r = s3.put_object(Bucket=B, Key="k", Body=b"v0")
eq(r.get("VersionId"), None, "no version id while unversioned")
r = s3.get_object(Bucket=B, Key="k")
eq(r.get("VersionId"), None, "no version id header while unversioned")
expect_error("MalformedXML", s3.put_bucket_versioning, Bucket=B,
             VersioningConfiguration={}, status=400)
expect_error("NotImplemented", s3.put_bucket_versioning, Bucket=B,
             VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"}, status=501)
s3.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Enabled"})
eq(s3.get_bucket_versioning(Bucket=B).get("Status"), "Enabled", "enabled")
st, _, xml = raw("get_bucket_versioning", {"Bucket": B})
eq(st, 200, "GetBucketVersioning status")
if b"<Status>Enabled</Status>" not in xml:
    raise AssertionError(f"GetBucketVersioning XML: {xml!r}")
ok("put/get bucket versioning")

# --- every PUT makes a version; old ones stay readable
v1 = s3.put_object(Bucket=B, Key="k", Body=b"v1")["VersionId"]
v2 = s3.put_object(Bucket=B, Key="k", Body=b"v2")["VersionId"]
for v in (v1, v2):
    if not VID.match(v):
        raise AssertionError(f"version id {v!r}")
if v1 == v2:
    raise AssertionError("two PUTs made one version")
r = s3.get_object(Bucket=B, Key="k")
eq((r["Body"].read(), r["VersionId"]), (b"v2", v2), "GET newest")
eq(body("k", VersionId=v1), b"v1", "GET by version")
eq(body("k", VersionId="null"), b"v0", "GET the null version")
h = s3.head_object(Bucket=B, Key="k", VersionId=v1)
eq((h["ContentLength"], h["VersionId"]), (2, v1), "HEAD by version")
eq(s3.head_object(Bucket=B, Key="k", VersionId="null")["VersionId"], "null", "HEAD null")
expect_error("NoSuchVersion", s3.get_object, Bucket=B, Key="k",
             VersionId="0" * 32, status=404)
expect_error("InvalidArgument", s3.get_object, Bucket=B, Key="k",
             VersionId="not-a-version", status=400)
got, _ = versions("k")
eq(got, [("k", v2, True, False), ("k", v1, False, False), ("k", "null", False, False)],
   "versions newest first")
ok("versions by PUT, GET/HEAD by versionId")

# --- DELETE without a version id writes a delete marker
d = s3.delete_object(Bucket=B, Key="k")
eq(d.get("DeleteMarker"), True, "delete marker made")
dm = d["VersionId"]
if not VID.match(dm) or dm in (v1, v2):
    raise AssertionError(f"marker id {dm!r}")
e = expect_error("NoSuchKey", s3.get_object, Bucket=B, Key="k", status=404)
hdr = e.response["ResponseMetadata"]["HTTPHeaders"]
eq((hdr.get("x-amz-delete-marker"), hdr.get("x-amz-version-id")), ("true", dm),
   "GET of a deleted key names its marker")
expect_error("NoSuchKey", s3.head_object, Bucket=B, Key="k", status=404)
e = expect_error("MethodNotAllowed", s3.get_object, Bucket=B, Key="k", VersionId=dm,
                 status=405)
eq(e.response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-delete-marker"), "true",
   "GET of a marker by id")
eq([o["Key"] for o in s3.list_objects_v2(Bucket=B).get("Contents", [])], [],
   "a deleted key is not listed")
eq(body("k", VersionId=v2), b"v2", "old versions survive the marker")
got, _ = versions("k")
eq(sorted(got), sorted([("k", dm, True, True), ("k", v2, False, False),
                        ("k", v1, False, False), ("k", "null", False, False)]),
   "versions with the marker")
ok("delete markers")

# --- CopyObject from an old version makes a new version
c = s3.copy_object(Bucket=B, Key="k2", CopySource={"Bucket": B, "Key": "k", "VersionId": v1})
eq(c.get("CopySourceVersionId"), v1, "copy source version")
if not VID.match(c.get("VersionId", "")):
    raise AssertionError(f"copy made no version: {c}")
eq(body("k2"), b"v1", "copy of the old version")
expect_error("MethodNotAllowed", s3.copy_object, Bucket=B, Key="k3",
             CopySource={"Bucket": B, "Key": "k", "VersionId": dm}, status=405)
ok("copy by version")

# --- deleting the marker brings the newest version back
d = s3.delete_object(Bucket=B, Key="k", VersionId=dm)
eq((d.get("DeleteMarker"), d.get("VersionId")), (True, dm), "marker deleted")
eq(body("k"), b"v2", "undeleted")
d = s3.delete_object(Bucket=B, Key="k", VersionId=v2)
eq(d.get("VersionId"), v2, "version deleted")
eq(body("k"), b"v1", "the previous version is current")
expect_error("NoSuchVersion", s3.get_object, Bucket=B, Key="k", VersionId=v2, status=404)
ok("delete by version")

# --- DeleteObjects with version ids
r = s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "k", "VersionId": v1},
                                                    {"Key": "k2"}]})
by_key = {x["Key"]: x for x in r.get("Deleted", [])}
eq(by_key["k"].get("VersionId"), v1, "multi-delete by version")
eq(by_key["k2"].get("DeleteMarker"), True, "multi-delete makes a marker")
if not VID.match(by_key["k2"].get("DeleteMarkerVersionId", "")):
    raise AssertionError(f"no marker version: {by_key['k2']}")
eq(body("k"), b"v0", "the null version is all that is left")
ok("DeleteObjects with versions")

# --- ListObjectVersions: pages of every size agree; delimiter
for i in range(3):
    s3.put_object(Bucket=B, Key="p/a", Body=b"a%d" % i)
for i in range(2):
    s3.put_object(Bucket=B, Key="p/b", Body=b"b%d" % i)
s3.delete_object(Bucket=B, Key="p/b")
full, _ = versions()
eq([k for k, _, _, _ in full].count("p/a"), 3, "p/a versions")
eq([k for k, _, _, _ in full].count("p/b"), 3, "p/b versions and marker")
for page in (1, 2, 3):
    got, _ = versions(page=page)
    eq(sorted(got), sorted(full), f"pages of {page}")
    # Pages of one entry show the listing order itself (a page splits
    # versions and markers into two lists): keys in order, each key's
    # newest first.
    if page == 1:
        keys = [k for k, _, _, _ in got]
        eq(keys, sorted(keys), "key order")
        for k in set(keys):
            eq([l for kk, _, l, _ in got if kk == k][0], True, f"{k}: newest first")
got, prefixes = versions(delimiter="/")
eq(prefixes, ["p/"], "common prefix")
eq(sorted({k for k, _, _, _ in got}), ["k", "k2"], "keys beside the prefix")
got, prefixes = versions(delimiter="/", page=1)
eq(prefixes, ["p/"], "common prefix, pages of 1")
got, _ = versions(prefix="p/a")
eq([l for _, _, l, _ in got], [True, False, False], "one latest per key")
expect_error("InvalidArgument", s3.list_object_versions, Bucket=B, VersionIdMarker=v1,
             status=400)
ok("ListObjectVersions")

# --- multipart completion makes a version
up = s3.create_multipart_upload(Bucket=B, Key="mp")["UploadId"]
part = s3.upload_part(Bucket=B, Key="mp", UploadId=up, PartNumber=1, Body=b"m" * 1000)
done = s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=up, MultipartUpload={
    "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
mv = done.get("VersionId", "")
if not VID.match(mv):
    raise AssertionError(f"CompleteMultipartUpload made no version: {done}")
s3.put_object(Bucket=B, Key="mp", Body=b"after")
eq(body("mp", VersionId=mv), b"m" * 1000, "multipart version kept")
ok("multipart versions")

# --- suspended: writes replace the null version, others stay
s3.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Suspended"})
eq(s3.get_bucket_versioning(Bucket=B).get("Status"), "Suspended", "suspended")
s3.put_object(Bucket=B, Key="p/a", Body=b"s1")
s3.put_object(Bucket=B, Key="p/a", Body=b"s2")
eq(body("p/a"), b"s2", "suspended write is current")
eq(body("p/a", VersionId="null"), b"s2", "it is the null version")
got, _ = versions(prefix="p/a")
eq([(v, l) for _, v, l, _ in got if l], [("null", True)], "null version newest")
eq(len(got), 4, "the three enabled versions stay, one null version")
d = s3.delete_object(Bucket=B, Key="p/a")
eq((d.get("DeleteMarker"), d.get("VersionId")), (True, "null"), "null delete marker")
got, _ = versions(prefix="p/a")
eq([(v, l) for _, v, l, m in got if m], [("null", True)], "null marker newest")
eq([v for _, v, _, m in got if not m].count("null"), 0, "the null version went")
eq(len(got), 4, "the null version was replaced by the marker")
ok("suspended versioning")

# --- a bucket with versions is not empty; emptied, it can go
expect_error("BucketNotEmpty", s3.delete_bucket, Bucket=B, status=409)
left, _ = versions()
for k, v, _, _ in left:
    s3.delete_object(Bucket=B, Key=k, VersionId=v)
eq(versions()[0], [], "no versions left")
s3.delete_bucket(Bucket=B)
ok("delete bucket")
print("ALL OK")
