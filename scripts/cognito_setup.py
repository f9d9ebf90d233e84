#!/usr/bin/env python3
"""Creates the bootcamp app's user pool in a Cognito API (the emulator, or AWS itself).

Sign-in with email; required attributes name and preferred_username; an app client without a
secret allowing USER_PASSWORD_AUTH and refresh, whose ID tokens carry email, name and
preferred_username; an `admins` group. Prints the ids as JSON and, with --config, writes the
cognito-authz TOML for the pool.
"""
import argparse
import os
import secrets
import json
import sys
import time
import urllib.error
import urllib.request

import boto3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True, help="Cognito API endpoint, e.g. http://127.0.0.1:5000")
    parser.add_argument("--jwks-base", help="base URL cognito-authz fetches keys from (default: --endpoint)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--config", help="write a cognito-authz TOML config for the pool here")
    parser.add_argument("--admin-token", metavar="FILE",
                        help="write a random secret for cognito-authz's control API here (mode 0600)")
    parser.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                        help="wait up to this long for the endpoint to answer (compose start-up)")
    args = parser.parse_args()

    deadline = time.monotonic() + args.wait
    while True:
        try:
            urllib.request.urlopen(args.endpoint, timeout=2)
            break
        except urllib.error.HTTPError:
            break  # it answers, whatever it says
        except OSError as exc:
            if time.monotonic() >= deadline:
                print(f"cognito_setup.py: {args.endpoint} does not answer: {exc}", file=sys.stderr)
                return 1
            time.sleep(0.5)

    cognito = boto3.client(
        "cognito-idp",
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id="emulator",
        aws_secret_access_key="emulator",
    )
    pool = cognito.create_user_pool(
        PoolName="cruddur-user-pool",
        UsernameAttributes=["email"],
        AutoVerifiedAttributes=["email"],
        Schema=[
            {"Name": "name", "AttributeDataType": "String", "Required": True, "Mutable": True},
            {"Name": "preferred_username", "AttributeDataType": "String", "Required": True, "Mutable": True},
        ],
    )["UserPool"]
    client = cognito.create_user_pool_client(
        UserPoolId=pool["Id"],
        ClientName="cruddur-web",
        GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH", "ALLOW_USER_SRP_AUTH"],
        ReadAttributes=["email", "email_verified", "name", "preferred_username"],
    )["UserPoolClient"]
    cognito.create_group(GroupName="admins", UserPoolId=pool["Id"], Description="Cruddur administrators")

    jwks_base = (args.jwks_base or args.endpoint).rstrip("/")
    result = {
        "pool_id": pool["Id"],
        "client_id": client["ClientId"],
        "region": args.region,
        "jwks_uri": f"{jwks_base}/{pool['Id']}/.well-known/jwks.json",
    }
    if args.config:
        with open(args.config, "w", encoding="utf-8") as out:
            out.write(
                "# Written by scripts/cognito_setup.py for the emulated bootcamp pool.\n"
                "[[pools]]\n"
                f"id = \"{result['pool_id']}\"\n"
                f"client_ids = [\"{result['client_id']}\"]\n"
                f"jwks_uri = \"{result['jwks_uri']}\"\n"
                "# Cognito's API for GetUser (revocation checks): the emulator itself.\n"
                f"idp_endpoint = \"{args.endpoint.rstrip('/')}\"\n"
            )
    if args.admin_token:
        # cognito-authz reads it (AUTHZ_ADMIN_TOKEN_FILE): readable by that user only. In
        # compose the container runs as 65532 (distroless nonroot).
        fd = os.open(args.admin_token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        try:
            os.chown(args.admin_token, 65532, 65532)
        except PermissionError:
            pass  # not root: the file stays ours
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
