"""The one job runner (plan, dispatch, retry, assemble, write) and the executors it runs shards on.

Used by ``aud extract`` (on a throw-away job store) and by the daemon alike. Nothing here knows of
sockets or the inbox; the asyncio shell (``daemon.shell``) feeds it jobs and forwards its events.
"""
