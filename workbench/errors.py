"""Every public error the workbench raises is a `WorkbenchError` subclass.

Messages say what was expected and what came. Subclasses that also derive from a builtin
(shown as "also ...") can be caught either way:

    Exception
    └── WorkbenchError
        ├── ConfigError                  (also ValueError)
        ├── RingError
        │   ├── RingNotFound             (also FileNotFoundError)
        │   ├── RingExists               (also FileExistsError)
        │   ├── RingLayoutError
        │   └── RingClosed
        ├── RecordingError
        ├── SharedDataMissing            (also FileNotFoundError)
        ├── NormalizeError               (also ValueError)
        ├── BookError
        ├── FeedError
        ├── EngineError
        ├── BarsError                    (also ValueError)
        ├── PhaseMismatch                (also AssertionError)
        └── UnknownPhase                 (also KeyError)
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base class of all workbench errors."""


class ConfigError(WorkbenchError, ValueError):
    """An invalid configuration value: names the field and the accepted values."""


class RingError(WorkbenchError):
    """A shared-memory ring call failed."""


class RingNotFound(RingError, FileNotFoundError):
    """No ring of that name exists in /dev/shm."""


class RingExists(RingError, FileExistsError):
    """A ring of that name already exists in /dev/shm (unlink it or pick another name)."""


class RingLayoutError(RingError):
    """The ring's layout version or record size differs from this build's."""


class RingClosed(RingError):
    """A call on a ring that was already closed."""


class RecordingError(WorkbenchError):
    """A recording is missing, unreadable or corrupt: names the file and the line."""


class SharedDataMissing(WorkbenchError, FileNotFoundError):
    """The real recordings directory (`$WORKBENCH_SHARED_DATA` or ../shared/data) is absent."""


class NormalizeError(WorkbenchError, ValueError):
    """A venue message could not be normalized (malformed, unknown type, bad value)."""


class BookError(WorkbenchError):
    """The L2 book is invalid (crossed, out of sync) or a sequence rule was broken."""


class FeedError(WorkbenchError):
    """A websocket feed or simulated exchange failed."""


class EngineError(WorkbenchError):
    """The engine could not start, stop or switch dispatch as asked."""


class BarsError(WorkbenchError, ValueError):
    """Bad bar data: names the file, column and row."""


class PhaseMismatch(WorkbenchError, AssertionError):
    """The baseline and optimized variants of a benchmark phase disagree (first difference)."""


class UnknownPhase(WorkbenchError, KeyError):
    """A benchmark phase or topic that is not registered: lists the valid ones."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
