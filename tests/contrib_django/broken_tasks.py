"""A task module that raises at import: the worker must survive its jobs."""

raise RuntimeError("this task module is broken on purpose")
