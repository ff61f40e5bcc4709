"""A real S3 protocol server on loopback for the upload tests (moto, from
PyPI: .ci/requirements.txt).

With `auth`, it makes one IAM user and refuses any other key (moto 5.2 then
also refuses the user's own requests on keys holding '=', which every
hive-partitioned name does: signature checks are only usable to test a wrong
key); with `open`, any key is accepted.

usage:
  s3_server.py serve PORT BUCKET auth|open
                                     prints {"key": ..., "secret": ...} on one
                                     line, then serves until stdin closes; every
                                     request is logged on stderr (method, path,
                                     status), the test's request log
  s3_server.py list URL KEY SECRET BUCKET          keys and sizes, as JSON
  s3_server.py read URL KEY SECRET BUCKET/PREFIX   rows per host of the flows
                                                   in the bucket, read by
                                                   pyarrow's S3 filesystem
"""

import json
import os
import sys


def serve(port, bucket, mode):
    if mode == "auth":
        # The first four requests (below) make the user and the bucket;
        # every later one must be signed with the user's key.
        os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"
    from moto.server import ThreadedMotoServer
    import boto3

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(port))
    # Its banner goes to the log: stdout carries only the keys.
    stdout, sys.stdout = sys.stdout, sys.stderr
    server.start()
    sys.stdout = stdout
    url = f"http://127.0.0.1:{port}"
    if mode != "auth":
        client(url, "flowsql", "flowsql").create_bucket(Bucket=bucket)
        print(json.dumps({"key": "flowsql", "secret": "flowsql"}), flush=True)
        sys.stdin.read()
        server.stop()
        return
    anyone = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
    iam = boto3.client("iam", **anyone)
    iam.create_user(UserName="flowsql")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="flowsql", PolicyName="all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="flowsql")["AccessKey"]
    s3 = client(url, key["AccessKeyId"], key["SecretAccessKey"])
    s3.create_bucket(Bucket=bucket)
    print(json.dumps({"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}), flush=True)
    sys.stdin.read()
    server.stop()


def client(url, key, secret):
    import boto3

    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret
    )


def list_objects(url, key, secret, bucket):
    s3 = client(url, key, secret)
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            objects[o["Key"]] = o["Size"]
    print(json.dumps(objects))


def read(url, key, secret, path):
    import pyarrow.dataset as ds
    from pyarrow import fs

    s3 = fs.S3FileSystem(
        access_key=key, secret_key=secret, endpoint_override=url, scheme="http", region="us-east-1"
    )
    table = ds.dataset(path, filesystem=s3, format="parquet", partitioning="hive").to_table()
    counts = {}
    for host, part in zip(table.column("hostName").to_pylist(), table.column("host").to_pylist()):
        counts.setdefault(part, {}).setdefault(host, 0)
        counts[part][host] += 1
    print(json.dumps({"rows": table.num_rows, "byPartition": counts, "timestamp": str(table.schema.field("timestamp").type)}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"serve": serve, "list": list_objects, "read": read}[command](*args)
