"""The one error hierarchy of the control socket's commands.

``CommandError`` is a refusal the user caused (``no job 7``, a path that is no file): its message is
the reply's error, nothing is logged. Anything else a command raises is an internal error: logged
with its traceback, and the reply says so (never a polite refusal that hides a bug).
"""

from __future__ import annotations


class CommandError(Exception):
    """A refusal the user caused; the message says what to do instead."""
