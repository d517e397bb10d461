"""enforcement-controller --check-config FILE: is this configuration good to
start with? (Faucet's check_faucet_config, for this controller.)

Reads the settings, the policy, access and inventory files they name, the
TLS, token and LLDP key files; prints the settings that would be used and what the
files hold; exits 0 when all is good, 1 naming every mistake otherwise.
It starts nothing and changes nothing: no port is bound, no switch reached,
no store opened (or created), not even the state directory is made.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from controller.process import config


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    errors: list[str] = list(args.errors)
    notes: list[str] = []
    _files(args, errors, notes)
    print(f"# {PROG_NOTE}", file=out)
    print(config.effective(args), file=out)
    print(file=out)
    for note in notes:
        print(note, file=out)
    if errors:
        print(f"{len(errors)} mistake(s) in {args.check_config}:", file=sys.stderr)
        for error in errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    print(f"{args.check_config}: good", file=out)
    return 0


PROG_NOTE = ("the settings that would be used: flag > environment > file > default "
             "(each line says which)")


def _files(args: argparse.Namespace, errors: list[str], notes: list[str]) -> None:
    """Loads each file the settings name, as a start would, without using it."""
    from enforcement.api import access as access_file
    from enforcement.domain import inventory as inventory_file
    from enforcement.domain import policy as policy_file
    name = args.origins.name
    try:
        policy = policy_file.load(args.policy)
        notes.append(f"policy: {args.policy or 'the shipped default'}, version "
                     f"{policy.version}, {len(policy.violations)} ladder(s), "
                     f"{sum(len(r.ladder) for r in policy.violations.values())} step(s)")
    except policy_file.PolicyError as exc:
        errors.append(f"{name('policy')}: {exc}" if args.policy else str(exc))
    try:
        access = access_file.load(args.access)
        notes.append(f"access: {args.access or 'none (no client has a role)'}, "
                     f"{len(access.clients)} client(s)")
    except access_file.AccessError as exc:
        errors.append(f"{name('access')}: {exc}")
    try:
        pinned = inventory_file.load(args.inventory)
        notes.append(f"inventory: {args.inventory or 'none'}, {len(pinned)} subscriber(s)")
    except inventory_file.InventoryError as exc:
        errors.append(f"{name('inventory')}: {exc}")
    if args.tls:
        from enforcement.api.tlsgate import server_context
        try:
            server_context(args.tls_cert, args.tls_key, args.tls_client_ca)
            notes.append("TLS: the certificate, key and client CA load")
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            errors.append(f"cannot use the TLS files ({args.tls_cert}, {args.tls_key}, "
                          f"{args.tls_client_ca}): {exc}")
        for dest, fallback in (("peer_cert", "tls_cert"), ("peer_key", "tls_key"),
                               ("peer_ca", "tls_client_ca")):
            path = getattr(args, dest)
            if path and not os.access(path, os.R_OK):
                errors.append(f"{name(dest)} {path}: cannot be read "
                              f"(it stands in for {config.BY_DEST[fallback].flag})")
    if args.http_token_file and args.http_listen != "off":
        try:
            with open(args.http_token_file) as token_file:
                if len(token_file.read().strip()) < 16:
                    errors.append(f"{name('http_token_file')}: the token in "
                                  f"{args.http_token_file} is shorter than 16 characters")
        except OSError as exc:
            errors.append(f"{name('http_token_file')} {args.http_token_file}: "
                          f"{exc.strerror}")
    if args.lldp_key_file:
        from controller.topology.lldp import key as lldpkey
        try:
            lldpkey.read_file(args.lldp_key_file)
            notes.append(f"LLDP key: {args.lldp_key_file}")
        except OSError as exc:
            errors.append(f"{name('lldp_key_file')} {args.lldp_key_file}: {exc.strerror}")
        except ValueError as exc:
            errors.append(f"{name('lldp_key_file')}: {exc}")
    else:
        notes.append("LLDP key: the one kept in the store (made at the first start)")
    _store(args, errors, notes)


def _store(args: argparse.Namespace, errors: list[str], notes: list[str]) -> None:
    """The database URL parses and names a known kind; the state directory is
    looked at, never made."""
    from sqlalchemy.engine import make_url
    try:
        url = make_url(args.db)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError, and worse inputs
        errors.append(f"{args.origins.name('db')}: not a database URL ({exc})")
        return
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        errors.append(f"{args.origins.name('db')}: {url.get_backend_name()} is not "
                      "supported (sqlite or postgresql)")
    if os.path.isdir(args.state_dir):
        notes.append(f"state directory: {args.state_dir}")
    else:
        notes.append(f"state directory: {args.state_dir} (does not exist yet; a start "
                     "creates it)")
