"""boto3 against the Cairn S3 gateway: bucket CORS and bucket tagging
(issue 13), and CORS on requests (preflight and actual). Run by
tests/it/cors.rs with S3_ENDPOINT, S3_KEY, S3_SECRET in the environment.
With CORS_MODE=api (default) it runs the checks, printing one line per
check and exiting non-zero on the first failure; with CORS_MODE=set it
sets the bucket `cors` to allow CORS_ORIGIN (GET, PUT), and with
CORS_MODE=presign it prints presigned PUT and GET URLs of CORS_KEY as
JSON."""

import json
import os
import urllib.error
import urllib.request

import boto3
import botocore
from botocore.config import Config

ENDPOINT = os.environ["S3_ENDPOINT"]
MODE = os.environ.get("CORS_MODE", "api")

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


def eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


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


def http(method, path, headers):
    """An unsigned request: (status, headers, body)."""
    req = urllib.request.Request(ENDPOINT + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def browser_rule(origin):
    return {"AllowedMethods": ["GET", "PUT"], "AllowedOrigins": [origin],
            "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 5}


if MODE == "set":
    s3.put_bucket_cors(Bucket="cors", CORSConfiguration={
        "CORSRules": [browser_rule(os.environ["CORS_ORIGIN"])]})
    raise SystemExit(0)

if MODE == "presign":
    key = os.environ["CORS_KEY"]
    put = s3.generate_presigned_url("put_object", Params={"Bucket": "cors", "Key": key},
                                    HttpMethod="PUT")
    get = s3.generate_presigned_url("get_object", Params={"Bucket": "cors", "Key": key})
    print(json.dumps({"put": put, "get": get}))
    raise SystemExit(0)

s3.create_bucket(Bucket="cors")

# --- Bucket CORS: round trip, 404, validation -------------------------------
expect_error("NoSuchCORSConfiguration", s3.get_bucket_cors, Bucket="cors", status=404)
expect_error("NoSuchBucket", s3.get_bucket_cors, Bucket="no-such-bucket", status=404)
expect_error("NoSuchBucket", s3.put_bucket_cors, Bucket="no-such-bucket",
             CORSConfiguration={"CORSRules": [browser_rule("*")]}, status=404)
rules = [
    {"ID": "site", "AllowedMethods": ["GET", "HEAD"],
     "AllowedOrigins": ["http://*.example.com"], "AllowedHeaders": ["x-amz-*"],
     "ExposeHeaders": ["ETag", "x-amz-request-id"], "MaxAgeSeconds": 300},
    {"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]},
]
s3.put_bucket_cors(Bucket="cors", CORSConfiguration={"CORSRules": rules})
got = s3.get_bucket_cors(Bucket="cors")["CORSRules"]
eq(got, rules, "GetBucketCors")
ok("PutBucketCors / GetBucketCors round trip, NoSuchCORSConfiguration, NoSuchBucket")

for bad, code, what in [
    ([{"AllowedMethods": ["PATCH"], "AllowedOrigins": ["*"]}], "InvalidRequest", "method"),
    ([{"AllowedMethods": ["GET"], "AllowedOrigins": ["http://*.*.com"]}], "InvalidRequest",
     "two origin wildcards"),
    ([{"AllowedMethods": ["GET"], "AllowedOrigins": ["*"], "AllowedHeaders": ["x-*-*"]}],
     "InvalidRequest", "two header wildcards"),
    ([{"AllowedMethods": ["GET"], "AllowedOrigins": ["*"], "ExposeHeaders": ["*"]}],
     "InvalidRequest", "expose wildcard"),
    ([{"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}] * 101, "InvalidRequest",
     "101 rules"),
    ([{"AllowedMethods": ["GET"], "AllowedOrigins": ["http://" + "o" * 70000]}],
     "InvalidRequest", "over 64 KiB"),
]:
    e = expect_error(code, s3.put_bucket_cors, Bucket="cors",
                     CORSConfiguration={"CORSRules": bad}, status=400)
    print("  refused", what, ":", e.response["Error"].get("Message"), flush=True)
eq(s3.get_bucket_cors(Bucket="cors")["CORSRules"], rules, "rules after refusals")
ok("invalid CORS configurations refused with 400, the old one kept")

# --- CORS on requests ----------------------------------------------------------
s3.put_object(Bucket="cors", Key="k", Body=b"hello")
st, h, _ = http("OPTIONS", "/cors/k", {"Origin": "http://a.example.com",
                                       "Access-Control-Request-Method": "GET",
                                       "Access-Control-Request-Headers": "X-Amz-Date, x-amz-content-sha256"})
eq(st, 200, "allowed preflight")
eq(h["Access-Control-Allow-Origin"], "http://a.example.com", "ACAO")
eq(h["Access-Control-Allow-Methods"], "GET, HEAD", "ACAM")
eq(h["Access-Control-Allow-Headers"], "x-amz-date, x-amz-content-sha256", "ACAH")
eq(h["Access-Control-Max-Age"], "300", "max age")
eq(h["Access-Control-Expose-Headers"], "ETag, x-amz-request-id", "expose")
eq(h["Vary"], "Origin, Access-Control-Request-Headers, Access-Control-Request-Method", "Vary")
# The second rule allows GET from anywhere, without headers: '*'.
st, h, _ = http("OPTIONS", "/cors/k", {"Origin": "http://elsewhere.test",
                                       "Access-Control-Request-Method": "GET"})
eq((st, h["Access-Control-Allow-Origin"]), (200, "*"), "wildcard preflight")
for what, hdrs in [
    ("origin", {"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "PUT"}),
    ("method", {"Origin": "http://a.example.com", "Access-Control-Request-Method": "DELETE"}),
    ("header", {"Origin": "http://a.example.com", "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization"}),
]:
    st, h, body = http("OPTIONS", "/cors/k", hdrs)
    eq(st, 403, f"refused preflight ({what})")
    assert b"CORSResponse: This CORS request is not allowed" in body, body
    assert "Access-Control-Allow-Origin" not in h, what
st, _, _ = http("OPTIONS", "/cors/k", {"Access-Control-Request-Method": "GET"})
eq(st, 400, "preflight without Origin")
ok("preflight: allowed (200 + headers), refused (403 CORSResponse), no Origin (400)")

# An actual (signed) request with Origin gets the matching rule's headers.
seen = {}


def grab(http_response, **_):
    seen.update(http_response.headers)


s3.meta.events.register("after-call.s3.GetObject", grab)
s3.get_object(Bucket="cors", Key="k", **{})  # no Origin: no CORS headers
assert "access-control-allow-origin" not in {k.lower() for k in seen}, seen
s3.meta.events.register("before-sign.s3.GetObject",
                        lambda request, **_: request.headers.__setitem__("Origin", "http://b.example.com"))
seen.clear()
eq(s3.get_object(Bucket="cors", Key="k")["Body"].read(), b"hello", "GET with Origin")
low = {k.lower(): v for k, v in seen.items()}
eq(low.get("access-control-allow-origin"), "http://b.example.com", "ACAO on GET")
eq(low.get("access-control-expose-headers"), "ETag, x-amz-request-id", "expose on GET")
eq(low.get("vary"), "Origin", "Vary on GET")
s3.meta.events.unregister("before-sign.s3.GetObject")
ok("GET with a matching Origin gets Access-Control-Allow-Origin, -Expose-Headers, Vary")

s3.delete_bucket_cors(Bucket="cors")
expect_error("NoSuchCORSConfiguration", s3.get_bucket_cors, Bucket="cors", status=404)
s3.delete_bucket_cors(Bucket="cors")
ok("DeleteBucketCors (twice), then NoSuchCORSConfiguration")

# --- Bucket tagging --------------------------------------------------------------
expect_error("NoSuchTagSet", s3.get_bucket_tagging, Bucket="cors", status=404)
expect_error("NoSuchBucket", s3.get_bucket_tagging, Bucket="no-such-bucket", status=404)
tags = [{"Key": "team", "Value": "storage"}, {"Key": "empty", "Value": ""},
        {"Key": "k" * 128, "Value": "v" * 256}]
s3.put_bucket_tagging(Bucket="cors", Tagging={"TagSet": tags})
got = s3.get_bucket_tagging(Bucket="cors")["TagSet"]
eq(sorted(got, key=lambda t: t["Key"]), sorted(tags, key=lambda t: t["Key"]), "tag set")
fifty = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
s3.put_bucket_tagging(Bucket="cors", Tagging={"TagSet": fifty})
eq(len(s3.get_bucket_tagging(Bucket="cors")["TagSet"]), 50, "50 tags")
ok("PutBucketTagging / GetBucketTagging round trip, 50 tags, NoSuchTagSet")
for bad, what in [
    (fifty + [{"Key": "k50", "Value": "v"}], "51 tags"),
    ([{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}], "duplicate key"),
    ([{"Key": "aws:x", "Value": "1"}], "aws: prefix"),
    ([{"Key": "k" * 129, "Value": "1"}], "long key"),
    ([{"Key": "k", "Value": "v" * 257}], "long value"),
]:
    e = expect_error("InvalidTag", s3.put_bucket_tagging, Bucket="cors",
                     Tagging={"TagSet": bad}, status=400)
    print("  refused", what, ":", e.response["Error"].get("Message"), flush=True)
eq(len(s3.get_bucket_tagging(Bucket="cors")["TagSet"]), 50, "tags after refusals")
ok("invalid bucket tags refused with 400 InvalidTag, the old ones kept")
s3.delete_bucket_tagging(Bucket="cors")
expect_error("NoSuchTagSet", s3.get_bucket_tagging, Bucket="cors", status=404)
ok("DeleteBucketTagging, then NoSuchTagSet")

# A deleted bucket's configuration dies with it.
s3.create_bucket(Bucket="cors-gone")
s3.put_bucket_tagging(Bucket="cors-gone", Tagging={"TagSet": tags})
s3.put_bucket_cors(Bucket="cors-gone", CORSConfiguration={"CORSRules": rules})
s3.delete_bucket(Bucket="cors-gone")
s3.create_bucket(Bucket="cors-gone")
expect_error("NoSuchTagSet", s3.get_bucket_tagging, Bucket="cors-gone", status=404)
expect_error("NoSuchCORSConfiguration", s3.get_bucket_cors, Bucket="cors-gone", status=404)
ok("a re-created bucket has neither the old tags nor the old CORS rules")

print("ALL OK", flush=True)
