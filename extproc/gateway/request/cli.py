"""`aigrid trust hash-key`: the digest to put under trust.api_keys (the config never holds a key)."""

from __future__ import annotations

import argparse
import getpass
import sys

from extproc.gateway.request.trust import api_key_digest


def _hash_key(args: argparse.Namespace) -> int:
    key = args.key if args.key is not None else (getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline())
    key = key.strip()
    if not key:
        print("aigrid trust hash-key: empty key", file=sys.stderr)
        return 2
    print(api_key_digest(key))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("trust", help="SLA-class trust helpers")
    tsub = t.add_subparsers(dest="trust_command", metavar="COMMAND")
    tsub.required = True
    h = tsub.add_parser("hash-key", help="print the SHA-256 digest of an API key (from the argument, else stdin)")
    h.add_argument("key", nargs="?", default=None, help="the key (omit to read it from stdin, kept out of shell history)")
    h.set_defaults(func=_hash_key)
