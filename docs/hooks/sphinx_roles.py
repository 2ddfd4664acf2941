"""A Griffe extension for the API pages: Sphinx roles in docstrings become inline code.

The docstrings cite other objects the Sphinx way (``:class:`textenv.task.Task```, ``:func:`...```), which
Markdown would show literally. This rewrites each role to plain inline code when mkdocstrings loads the
packages; the source files are not touched.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj):`[~!]?([^`]+)`")


def roles_to_code(text: str) -> str:
    """``:class:`~a.B``` -> ```a.B```."""
    return ROLE.sub(lambda m: f"`{m.group(1)}`", text)


class SphinxRolesToCode(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring to inline code."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = roles_to_code(obj.docstring.value)
