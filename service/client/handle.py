"""What ``JobHandle`` and ``SweepHandle`` share: an id, the thing as last read, reading it again."""
from __future__ import annotations

from typing import Any, ClassVar

from service.client.http import Transport


class Handle:
    """One thing the API holds at ``PATH``/id. ``json`` is it as last read (``refresh()`` reads
    it again); ``repr`` shows its ``SHOWN`` field."""

    PATH: ClassVar[str]
    SHOWN: ClassVar[str]

    def __init__(self, client: Transport, ident: str, value: dict[str, Any] | None = None) -> None:
        self.client, self.id, self._json = client, ident, value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, {self.SHOWN}={(self._json or {}).get(self.SHOWN)!r})"

    @property
    def json(self) -> dict[str, Any]:
        """It as last read (read now if it never was)."""
        return self._json if self._json is not None else self.refresh()

    def refresh(self) -> dict[str, Any]:
        """Read it again; returns it (and keeps it as ``json``)."""
        self._json = self.client.get_json(f"{self.PATH}/{self.id}")
        return self._json


def pandas_for(as_frame: bool | None) -> Any:
    """The pandas module for a table the caller asked for: None when ``as_frame`` is False or
    pandas cannot be imported (plain lists then); ``as_frame=True`` insists (ImportError)."""
    if as_frame is False:
        return None
    try:
        import pandas
    except ImportError:
        if as_frame:
            raise
        return None
    return pandas
