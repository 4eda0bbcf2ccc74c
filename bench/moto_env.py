"""Importing this points boto3 at dummy credentials and a region, with the metadata
service off, before any client is made: the benches that run AWS in moto
(aws_requests, held_backlog) must never reach real AWS, whoever runs them and from
whatever shell."""

from __future__ import annotations

import os

for _name, _value in (
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
):
    os.environ[_name] = _value
