"""The ``personaspace`` command line: thin edges over the library."""
