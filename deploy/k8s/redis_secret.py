"""Make the Secret `aigrid-redis`: one Redis ACL user per role, random passwords, client URLs.

    python deploy/k8s/redis_secret.py [--namespace aigrid] [--host aigrid-redis:6379] | kubectl apply -f -
    python deploy/k8s/redis_secret.py --out-dir DIR      # the values as files (secretGenerator input)
    python deploy/k8s/redis_secret.py --also-accept OLD_users.acl ...   # rotation: old passwords stay valid
    python deploy/k8s/redis_secret.py --reuse DIR ...     # the passwords of DIR/*-url, nothing else accepted

Keys of the Secret:
  users.acl     the Redis ACL file the bundled Redis loads (--aclfile); passwords only as SHA-256 hashes
  gateway-url   for `aigrid serve`: read the load map (SCAN/GET/PTTL/SMEMBERS) and subscribe to it
  agent-url     for `aigrid agent`: write its own report keys (SET with a TTL) and publish them
  operator-url  for `aigrid site drain|undrain` and `aigrid status` (host = --host; docs/runbook.md
                reaches it through `kubectl port-forward`)
  admin-url     only `ACL LOAD` / `ACL LIST`: apply a rotated users.acl without restarting Redis
Every user is confined to the key prefix (--key-prefix, as `redis.key_prefix` in aigrid.yaml); the
default user is off. Standard library only, so it runs anywhere Python does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
from pathlib import Path

# Commands per role: exactly what the code sends (extproc/gateway/loadmap/reader.py, extproc/agent/publisher.py,
# extproc/gateway/operator/drain.py); tests/deploy/test_redis_acl.py runs each role against a real redis-server
# with these rules and checks a role cannot do another's writes.
ROLE_COMMANDS: dict[str, tuple[str, ...]] = {
    "gateway": ("ping", "select", "get", "pttl", "scan", "smembers", "subscribe", "unsubscribe", "psubscribe",
                "punsubscribe"),
    "agent": ("ping", "select", "set", "publish"),
    "operator": ("ping", "select", "get", "pttl", "scan", "smembers", "sadd", "srem", "publish", "subscribe",
                 "unsubscribe"),
    # No keys, no channels: only reloading the ACL file (credential rotation, docs/runbook.md).
    "admin": ("ping", "acl|load", "acl|list", "acl|whoami"),
}


def role_keys(role: str, prefix: str) -> tuple[list[str], list[str]]:
    """(key patterns, channel patterns) a role may touch."""
    if role == "admin":
        return [], []
    if role == "agent":
        # One agent user for every site here (one Secret for the DaemonSet); deploy/redis/users.acl shows
        # the stricter layout, a user per site confined to its own keys and channel.
        return [f"{prefix}:report:*"], [f"{prefix}:reports:*"]
    if role == "gateway":
        # reports:* literally: the gateway PSUBSCRIBEs that pattern; reports: the shared channel of agents
        # from before per-site channels, read during an upgrade.
        return [f"{prefix}:*"], [f"{prefix}:reports", f"{prefix}:reports:*", f"{prefix}:control",
                                 f"{prefix}:inflight"]
    return [f"{prefix}:*"], [f"{prefix}:control", f"{prefix}:reports"]


def acl_line(role: str, password: str, prefix: str, also_accept: tuple[str, ...] = ()) -> str:
    """One ACL file line; `also_accept`: further SHA-256 password hashes that stay valid (rotation)."""
    keys, channels = role_keys(role, prefix)
    digest = hashlib.sha256(password.encode()).hexdigest()
    hashes = [digest] + [h for h in also_accept if h != digest]
    parts = ["user", role, "on", *(f"#{h}" for h in hashes), "resetkeys", "resetchannels"]
    parts += [f"~{k}" for k in keys] + [f"&{c}" for c in channels]
    parts += ["-@all"] + [f"+{c}" for c in ROLE_COMMANDS[role]]
    if role == "gateway":
        # Gateway replicas exchange in-flight counts (extproc/gateway/server/peers.py): a Redis 7 selector lets
        # them PUBLISH on that one channel only, never on the reports or control channels.
        parts.append(f"(&{prefix}:inflight -@all +publish)")
    return " ".join(parts)


def password_hashes(acl_text: str) -> dict[str, tuple[str, ...]]:
    """The `#<sha256>` password hashes of each user in an ACL file."""
    out: dict[str, tuple[str, ...]] = {}
    for line in acl_text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "user":
            out[words[1]] = tuple(w[1:] for w in words[2:] if w.startswith("#"))
    return out


def secret_values(host: str, prefix: str, passwords: dict[str, str] | None = None, db: int = 0,
                  also_accept_acl: str | None = None) -> dict[str, str]:
    """The Secret's values. `also_accept_acl`: a previous users.acl whose passwords stay valid too."""
    passwords = passwords or {role: secrets.token_urlsafe(24) for role in ROLE_COMMANDS}
    old = password_hashes(also_accept_acl) if also_accept_acl else {}
    acl = ["user default off"] + [acl_line(role, passwords[role], prefix, old.get(role, ())) for role in ROLE_COMMANDS]
    values = {"users.acl": "\n".join(acl) + "\n"}
    for role in ROLE_COMMANDS:
        values[f"{role}-url"] = f"redis://{role}:{passwords[role]}@{host}/{db}"
    return values


def passwords_from_dir(directory: Path) -> dict[str, str]:
    """Each role's password from the <role>-url files an --out-dir run wrote."""
    out = {}
    for role in ROLE_COMMANDS:
        url = (directory / f"{role}-url").read_text(encoding="utf-8").strip()
        creds = url.partition("://")[2].rpartition("@")[0]
        out[role] = creds.partition(":")[2]
        if not out[role]:
            raise SystemExit(f"{directory / (role + '-url')}: no password in the URL")
    return out


def secret_manifest(values: dict[str, str], namespace: str, name: str = "aigrid-redis") -> str:
    # JSON is YAML: no YAML library needed, and kubectl reads it as is.
    return json.dumps({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "aigrid", "app.kubernetes.io/part-of": "aigrid"}},
        "type": "Opaque",
        "stringData": values,
    }, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--namespace", default="aigrid")
    p.add_argument("--host", default="aigrid-redis:6379", help="host:port the client URLs name")
    p.add_argument("--key-prefix", default="aigrid")
    p.add_argument("--out-dir", type=Path, help="write the values as files here instead of printing a Secret")
    p.add_argument("--also-accept", type=Path, metavar="USERS_ACL",
                   help="a previous users.acl: its passwords stay valid as well (first step of a rotation)")
    p.add_argument("--reuse", type=Path, metavar="DIR",
                   help="take the passwords from DIR/<role>-url (an --out-dir): the last step of a rotation")
    args = p.parse_args(argv)
    previous = args.also_accept.read_text(encoding="utf-8") if args.also_accept else None
    passwords = passwords_from_dir(args.reuse) if args.reuse else None
    values = secret_values(args.host, args.key_prefix, passwords, also_accept_acl=previous)
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for key, value in values.items():
            (args.out_dir / key).write_text(value, encoding="utf-8")
        return 0
    sys.stdout.write(secret_manifest(values, args.namespace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
