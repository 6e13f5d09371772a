"""The pure, synchronous inference core: decode, detect, crop, infer, post-process, rows.

Nothing in here knows of asyncio, sockets or folders; worker processes import only this package.
"""
