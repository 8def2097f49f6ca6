"""Line counting for a streamed history export, so the client knows where the next page starts."""
from __future__ import annotations

import re


class Lines:
    """Counts the lines of a text stream and finds the step that begins its last one (a CSV
    line's first field, an NDJSON line's "step"), keeping only the start of each line."""

    _STEP = re.compile(rb'^(?:\{"step": ?)?(-?\d+)')
    HEAD = 64

    def __init__(self, skip_header: bool) -> None:
        self.skip, self.count, self.head, self.last_step = skip_header, 0, b"", None

    @property
    def partial(self) -> bool:
        return bool(self.head)

    def feed(self, piece: bytes) -> bytes:
        """Take ``piece`` in; what of it to pass on (all, less a header line to skip)."""
        out = piece
        end = piece.rfind(b"\n")
        if end < 0:
            if len(self.head) < self.HEAD:
                self.head += piece[:self.HEAD - len(self.head)]
        else:
            self.count += piece.count(b"\n")
            begin = piece.rfind(b"\n", 0, end) + 1
            last = (self.head + piece[:end]) if begin == 0 else piece[begin:end]
            found = self._STEP.match(last[:self.HEAD])
            if found:
                self.last_step = int(found.group(1))
            self.head = piece[end + 1:end + 1 + self.HEAD]
        if self.skip:
            newline = piece.find(b"\n")
            if newline < 0:
                return b""
            self.skip, out = False, piece[newline + 1:]
        return out
