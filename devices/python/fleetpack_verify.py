#!/usr/bin/env python3
"""Verify a fleetpack package or its metadata the way a device should, before installing.

A reference for device developers: the Python standard library plus the `cryptography`
package. For every app in package_details.json it checks, and refuses on any failure:

  1. the app's "envelope" is a DSSE envelope of payload type
     application/vnd.fleetpack.release+json, signed by a trusted key (its keyid is the
     SHA-256 of the raw 32-byte Ed25519 public key, in lowercase hex);
  2. the Ed25519 signature over DSSE's pre-authentication encoding
     ("DSSEv1 <len(type)> <type> <len(payload)> <payload>");
  3. the statement names this app, channel and version, and the binary's SHA-256 and
     size (the bytes in the package; for an app the device already has, the metadata's);
  4. the statement has not expired (a freeze attack serves old metadata);
  5. its sequence is not lower than the highest one the device saw for that app and
     channel (a rollback attack serves an older signed release).

Usage:
  fleetpack_verify.py PACKAGE.tar.gz --public-key release.pub [--public-key new.pub] [--state state.json]
  fleetpack_verify.py --metadata package_details.json --public-key release.pub [--state state.json]

--state keeps the highest sequence seen per app and channel (a JSON object), read before
and written after a successful check. Exit status: 0 verified, 1 refused, 2 bad usage.
"""

import argparse
import base64
import datetime
import hashlib
import json
import sys
import tarfile

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PAYLOAD_TYPE = "application/vnd.fleetpack.release+json"
DETAILS = "package_details.json"
# Bytes read at a time from a binary in a package.
BLOCK = 1 << 20


class Refused(Exception):
    """A release the device must not install, and why."""


def pae(payload_type, payload):
    """DSSE's pre-authentication encoding of a payload."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def read_keys(paths):
    """Trusted public keys by key id, from files of 64 hex digits."""
    keys = {}
    for path in paths:
        with open(path, encoding="ascii") as file:
            raw = bytes.fromhex(file.read().strip())
        if len(raw) != 32:
            raise ValueError(f"{path}: not a 32-byte Ed25519 public key in hex")
        keys[hashlib.sha256(raw).hexdigest()] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


def open_envelope(app, envelope, keys):
    """The statement a trusted key signed in `envelope`."""
    if not isinstance(envelope, dict):
        raise Refused(f"{app} is not signed: the release carries no envelope")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise Refused(f"the envelope of {app} has payload type {envelope.get('payloadType')!r}")
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
    except (KeyError, ValueError) as error:
        raise Refused(f"the envelope of {app} is malformed: {error}") from error
    unknown = []
    for signature in envelope.get("signatures", []):
        key = keys.get(signature.get("keyid"))
        if key is None:
            unknown.append(signature.get("keyid"))
            continue
        try:
            key.verify(base64.b64decode(signature["sig"], validate=True), pae(PAYLOAD_TYPE, payload))
        except (InvalidSignature, KeyError, ValueError) as error:
            raise Refused(
                f"the signature on {app}'s statement does not verify with key {signature.get('keyid')}"
            ) from error
        return json.loads(payload)
    raise Refused(f"the envelope of {app} is signed by no trusted key (key ids {unknown})")


def check(app, statement, expected, seen):
    """Refuses a statement that does not vouch for `expected`, has expired, or is older
    than the `seen` sequence."""
    for field in ("app", "channel", "version", "sha256", "size"):
        if statement.get(field) != expected[field]:
            raise Refused(
                f"the statement of {app} says {field} {statement.get(field)!r}, "
                f"but the release has {expected[field]!r}"
            )
    expires = datetime.datetime.fromisoformat(statement["expires"].replace("Z", "+00:00"))
    if expires <= datetime.datetime.now(datetime.timezone.utc):
        raise Refused(f"the statement of {app} expired at {statement['expires']}")
    if statement["sequence"] < seen:
        raise Refused(
            f"the statement of {app} has sequence {statement['sequence']}, lower than {seen} already seen"
        )


def binaries_of(package):
    """package_details.json and (SHA-256, size) of every other file of a package, each
    binary hashed as it is read, a block at a time, so memory stays small."""
    details, binaries = None, {}
    with tarfile.open(package, "r|gz") as archive:
        for member in archive:
            source = archive.extractfile(member)
            if member.name == DETAILS:
                details = json.loads(source.read())
                continue
            digest, size = hashlib.sha256(), 0
            while block := source.read(BLOCK):
                digest.update(block)
                size += len(block)
            binaries[member.name] = (digest.hexdigest(), size)
    if details is None:
        raise Refused(f"{package} holds no {DETAILS}")
    return details, binaries


def verify(details, binaries, keys, state):
    """Checks every app; returns the sequences to remember."""
    seen = {}
    for app, entry in details.items():
        statement = open_envelope(app, entry.get("envelope"), keys)
        name = f"{app}_{entry['latestVersion']}"
        if binaries is not None and entry["status_code"] == 200:
            if name not in binaries:
                raise Refused(f"{name} is not in the package")
            sha256, size = binaries[name]
        else:
            sha256, size = entry.get("sha256"), entry.get("size")
        expected = {
            "app": app,
            "channel": entry["channel"],
            "version": entry["latestVersion"],
            "sha256": sha256,
            "size": size,
        }
        slot = f"{app}/{entry['channel']}"
        check(app, statement, expected, state.get(slot, 0))
        seen[slot] = statement["sequence"]
        print(f"ok: {app} {entry['latestVersion']} on {entry['channel']} (sequence {statement['sequence']})")
    return seen


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", nargs="?", help="a package (.tar.gz) from GET /package")
    parser.add_argument("--metadata", help="a metadata-only answer (JSON) instead of a package")
    parser.add_argument("--public-key", action="append", required=True, help="trusted key (repeatable)")
    parser.add_argument("--state", help="JSON file of the highest sequences seen")
    args = parser.parse_args()
    if (args.package is None) == (args.metadata is None):
        parser.error("give a package or --metadata, one of them")
    try:
        keys = read_keys(args.public_key)
        state = {}
        if args.state:
            try:
                with open(args.state, encoding="utf-8") as file:
                    state = json.load(file)
            except FileNotFoundError:
                pass
    except (OSError, ValueError) as error:
        print(f"fleetpack_verify: {error}", file=sys.stderr)
        return 2
    try:
        if args.metadata:
            with open(args.metadata, encoding="utf-8") as file:
                details, binaries = json.load(file), None
        else:
            details, binaries = binaries_of(args.package)
        seen = verify(details, binaries, keys, state)
    except (Refused, OSError, ValueError, KeyError, tarfile.TarError, EOFError) as error:
        print(f"fleetpack_verify: refused: {error}", file=sys.stderr)
        return 1
    if args.state:
        state.update(seen)
        with open(args.state, "w", encoding="utf-8") as file:
            json.dump(state, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
