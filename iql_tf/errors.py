"""One exception type for expected user mistakes; `iql_tf.cli` prints it as one line."""


class UserError(Exception):
    """An expected mistake (bad file, bad flag, bad data): the message says what, where and how to fix it."""


def is_integer(value) -> bool:
    """An int from a gin file or flag (bools excluded: gin reads True as a bool, not as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or float from a gin file or flag (bools and quoted strings excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
