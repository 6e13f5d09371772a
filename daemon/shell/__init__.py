"""The asyncio shell: watch, queue, dispatch, report, write. Knows nothing of tensors."""
