"""Testing code that uses workflows: replaying recorded histories against today's code.

See the README's "Replaying recorded histories" and docs/history-format.md.
"""

from workflows.testing.histories import (
    HISTORY_FORMAT,
    HISTORY_FORMAT_VERSION,
    MAX_HISTORY_BYTES,
    HistoryFormatError,
    Replayed,
    export_history,
    export_history_sync,
    read_history,
    replay,
)

__all__ = [
    "HISTORY_FORMAT",
    "HISTORY_FORMAT_VERSION",
    "MAX_HISTORY_BYTES",
    "HistoryFormatError",
    "Replayed",
    "export_history",
    "export_history_sync",
    "read_history",
    "replay",
]
