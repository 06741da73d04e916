"""Tools: the model's function calls turned into declared, validated hardware actions.

This package declares them: :class:`ToolSpec` is one ``[[tools]]`` entry, checked when the
config is loaded, and :func:`declared` is what ``session.update`` sends (name, description
and parameters only).
"""

from edgevoice.tools.spec import ToolSpec, check_tool_set, declared

__all__ = ["ToolSpec", "check_tool_set", "declared"]
