"""Make sure the bucket of an s3:// storage URL exists; print "created" or "exists"."""

import sys

from minio import Minio

from sygmax.config import parse_storage_url

location = parse_storage_url(sys.stdin.read().strip())
client = Minio(location.endpoint, access_key=location.access_key, secret_key=location.secret_key,
               secure=location.secure, region=location.region)
if client.bucket_exists(location.bucket):
    print("exists")
else:
    client.make_bucket(location.bucket)
    print("created")
