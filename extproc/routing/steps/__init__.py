"""Built-in routing steps, registered by type name on import (see `extproc.routing.registry`)."""

from extproc.routing.steps import filters, pickers, rules, scorers  # noqa: F401
