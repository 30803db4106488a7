"""The one error type the CLI turns into a clear message and exit code 2."""


class D2OError(Exception):
    """Bad input or a refused operation: the message says what and where (file:line: field)."""

    exit_code = 2


def where(path, line=None, field=None) -> str:
    """`file:line: field` prefix for error messages."""
    s = str(path)
    if line is not None:
        s += f":{line}"
    if field is not None:
        s += f": field '{field}'"
    return s
