"""personaspace: map, monitor and stabilize the persona space of language models.

Example:
    >>> import personaspace
    >>> personaspace.__version__
    '0.1.0'
"""

from personaspace.errors import PersonaspaceError
from personaspace.models.loading import LoadedModel, load_model

__version__ = "0.1.0"

__all__ = ["LoadedModel", "PersonaspaceError", "__version__", "load_model"]
