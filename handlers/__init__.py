"""Code that runs inside AWS Lambda: entry points and their shared runtime.

Importing the package is the first thing a function's init does, so it is where the model's
download starts when the model loads during init (see ``runtime/prefetch.py``): the bytes arrive
while the entry point imports its libraries. Outside a Lambda execution environment it does nothing.
"""

from handlers.runtime import prefetch as _prefetch

_prefetch.start()
