"""API tokens: created, listed, revoked, and checked on every authenticated request.

A token is 256 random bits shown once, when it is created; the database keeps only its SHA-256.
A token is not a password (it is long and random, so there is nothing to brute-force), so one
unsalted hash is enough and keeps the per-request check cheap. ``id`` is a short public handle for
listing and revoking, never usable to authenticate.
"""
from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import select, update

from service.store.db import Database, NotFound, as_utc, utcnow
from service.store.models import Token
from service.store.records import TokenRecord

PREFIX = "dsc_"
# What create_token makes: the prefix and 32 random bytes, URL-safe base64 without padding.
TOKEN_SHAPE = re.compile(PREFIX + r"[A-Za-z0-9_-]{43}")
OWNER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$")


def digest(secret: str) -> str:
    """The SHA-256 (hex) a token is stored and looked up by."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _record(row: Token) -> TokenRecord:
    return TokenRecord(id=row.id, owner=row.owner, admin=row.admin, created_at=as_utc(row.created_at),  # type: ignore[arg-type]
                       revoked_at=as_utc(row.revoked_at))


def create_token(db: Database, owner: str, admin: bool = False) -> tuple[TokenRecord, str]:
    """A new token for ``owner``; returns its record and its secret text (not stored)."""
    if not OWNER_PATTERN.match(owner):
        raise ValueError("an owner is 1 to 200 characters: letters, digits and _ . @ - (starting with a letter or digit)")
    secret = PREFIX + secrets.token_urlsafe(32)
    row = Token(id=secrets.token_hex(6), owner=owner, admin=admin, hash=digest(secret), created_at=utcnow())
    with db.session() as s:
        s.add(row)
        s.flush()
        return _record(row), secret


def list_tokens(db: Database) -> list[TokenRecord]:
    """Every token ever made, oldest first, revoked ones included."""
    with db.session() as s:
        return [_record(t) for t in s.scalars(select(Token).order_by(Token.created_at, Token.id))]


def revoke_token(db: Database, token_id: str) -> TokenRecord:
    """Revoke a token by its id (again is harmless). Raises NotFound."""
    with db.session() as s:
        s.execute(update(Token).where(Token.id == token_id, Token.revoked_at.is_(None)).values(revoked_at=utcnow()))
        row = s.get(Token, token_id)
        if row is None:
            raise NotFound(f"no token with id '{token_id[:40]}'")
        return _record(row)


def verify_token(db: Database, secret: str) -> TokenRecord | None:
    """The live token whose text is ``secret``, or None (unknown or revoked). It is looked up by
    its hash, so no comparison ever runs on the token's own text (nothing for timing to leak)."""
    with db.session() as s:
        row = s.scalar(select(Token).where(Token.hash == digest(secret)))
        if row is None or row.revoked_at is not None:
            return None
        return _record(row)
