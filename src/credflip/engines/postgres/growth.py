"""Which of a user's statements grew between two observations, with their texts."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConnectFailed, EngineError
from . import signals as pg_signals

__all__ = ["StatementGrowth"]

#: Query texts kept in memory at most (beyond, the cache starts over).
TEXTS_KEPT = 1000


@dataclass
class StatementGrowth:
    """Calls by ``pg_stat_statements`` entry at the previous observation of each user, and
    the texts already read (the server reads its query file whole for each)."""

    _calls: dict[str, dict[tuple[str, ...], int]] = field(default_factory=dict, repr=False)
    _texts: dict[tuple[str, ...], str] = field(default_factory=dict, repr=False)

    def grown(
        self,
        source: pg_signals.Statements,
        run: Callable[..., list[tuple[Any, ...]]],
        user: str,
        fingerprint: Hashable,
    ) -> tuple[tuple[str, int], ...]:
        """*user*'s statements whose calls grew since the previous observation, most first.

        Growth is ranked by entry before any text is read; only the top
        entries' texts are fetched, once each (texts equal once shortened
        are summed). The first observation of a user has nothing to compare.
        """
        calls = source.calls(fingerprint)
        before = self._calls.get(user)
        self._calls[user] = calls
        if before is None:
            return ()
        grown = pg_signals.grown(before, calls)
        top = sorted(grown, key=lambda e: (-grown[e], e))[: pg_signals.TOP_STATEMENTS]
        missing = [e for e in top if e not in self._texts]
        if missing:
            if len(self._texts) > TEXTS_KEPT:
                self._texts.clear()
            try:
                self._texts.update(source.texts(run, user, missing))
            except ConnectFailed:
                raise  # the instance itself is gone
            except EngineError:
                pass  # the texts only name the clients: the counts stand without them
        by_text: dict[str, int] = {}
        for entry in top:
            text = self._texts.get(entry, "<text not read>")
            by_text[text] = by_text.get(text, 0) + grown[entry]
        return tuple(sorted(by_text.items(), key=lambda tc: (-tc[1], tc[0])))
