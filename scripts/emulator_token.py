#!/usr/bin/env python3
"""Re-signs a token from the Cognito emulator with the emulator's own key, after applying claim
edits. The emulator cannot be asked for a token that expired an hour ago; this makes one that
is real in every other respect (same key, kid, issuer, client).

Reads the token on stdin, prints the new token. Example: --set exp=-60 --set iat=-3660 makes
exp and iat relative to now (negative: in the past).
"""
import argparse
import base64
import json
import sys
import time

from joserfc import jwk, jwt
from moto.utilities.utils import load_resource


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", action="append", default=[], metavar="CLAIM=SECONDS",
                        help="set a time claim to now + SECONDS")
    args = parser.parse_args()

    token = sys.stdin.read().strip()
    header_b64, payload_b64, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)
    header = json.loads(base64.urlsafe_b64decode(pad(header_b64)))
    claims = json.loads(base64.urlsafe_b64decode(pad(payload_b64)))
    now = int(time.time())
    for edit in args.set:
        name, seconds = edit.split("=", 1)
        claims[name] = now + int(seconds)

    # The key the emulator signs every token with, loaded the way the emulator loads it.
    key = jwk.RSAKey.import_key(load_resource("cognitoidp/resources/jwks-private.json"))
    print(jwt.encode({"alg": header["alg"], "kid": header["kid"]}, claims, key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
