"""One exception type for expected user mistakes; `iql_tf.cli` prints it as one line."""

import re


class UserError(Exception):
    """An expected mistake (bad file, bad flag, bad data): the message says what, where and how to fix it."""


def is_integer(value) -> bool:
    """An int from a gin file or flag (bools excluded: gin reads True as a bool, not as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or float from a gin file or flag (bools and quoted strings excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, for a one-line error: TensorFlow's errors (`.message`) without
    the `{{function_node ...}}` names of the graph functions they came through, at most `limit` characters."""
    message = re.sub(r"\{\{[^}]*\}\}\s*", "", getattr(error, "message", None) or str(error)).strip()
    return (message.splitlines() or [""])[0][:limit]
