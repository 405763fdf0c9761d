"""What of a statement's text credflip may keep: the shape, never a value.

``pg_stat_statements`` replaces the constants of the statements it normalizes
(``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE``, ``MERGE``...) with ``$1``, but
keeps a utility statement's text as it was sent: ``ALTER ROLE x PASSWORD
'...'``, ``SET app.api_key = sk_live_...``, ``CREATE USER MAPPING ... OPTIONS
(password '...')``; and any statement's comments. The texts credflip keeps
(the legacy clients' statements, in the state, ``status`` and the rotator's
log) are therefore reduced here:

- comments are dropped and every literal is blanked (``'…'``, ``$$…$$``),
  whatever its quoting (``E'..\\'..'``, doubled quotes, dollar quotes, one the
  truncation left open);
- a statement that is not one of the normalized kinds keeps only its command
  (``ALTER ROLE …``, ``SET …``): its other words may be values;
- a text that still names a password or key is cut right after that word.
"""

from __future__ import annotations

import re

__all__ = ["safe_text"]

#: Statements pg_stat_statements normalizes (their constants are ``$n``).
NORMALIZED = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "VALUES", "TABLE"})

# One token the scan must step over whole: a comment, a literal, a quoted name.
_TOKEN = re.compile(
    r"""
    (?P<block>/\*.*?(?:\*/|$))                         # /* comment */ (or left open)
  | (?P<line>--.*$)                                    # -- comment, to the end
  | (?P<estring>[Ee]'(?:[^'\\]|\\.|'')*(?:'|$))        # E'..\'..'
  | (?P<string>[BbXxUuNn]?(?:&)?'(?:[^']|'')*(?:'|$))  # '..''..', B'', X'', U&''
  | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$.*?(?:\$(?P=tag)\$|$))
  | (?P<ident>"(?:[^"]|"")*(?:"|$))                    # "quoted name": kept
    """,
    re.DOTALL | re.VERBOSE,
)
_SECRET = re.compile(
    r"(password|passwd|identified\s+by|encrypted|secret|token|api_?key|credential)",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z]+")


def _blank(found: re.Match[str]) -> str:
    if found.group("block") or found.group("line"):
        return " "
    if found.group("dollar"):
        return "$$…$$"
    if found.group("ident"):
        return found.group(0)
    return "'…'"


def safe_text(text: str) -> str:
    """*text* reduced to what may be kept (see the module's docstring), one line."""
    text = " ".join(_TOKEN.sub(_blank, text).split())
    words = text.split(" ", 2)
    if not words[0] or words[0].upper() not in NORMALIZED:
        tag: list[str] = []
        for word in words[:2]:
            if not _WORD.fullmatch(word) or (tag and tag[0] not in _TWO_WORD_COMMANDS):
                break
            tag.append(word.upper())
        return " ".join(tag) + " …" if tag else "…"
    found = _SECRET.search(text)
    return text if found is None else text[: found.end()] + " …"


#: Commands whose second word says what they act on (``ALTER ROLE``, ``CREATE TABLE``).
_TWO_WORD_COMMANDS = frozenset(
    {"ALTER", "CREATE", "DROP", "COMMENT", "GRANT", "REVOKE", "REFRESH", "SECURITY", "IMPORT"}
)
