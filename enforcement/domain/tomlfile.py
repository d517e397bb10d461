"""Reading an operator's TOML file (access, inventory) with errors that name
the file, and the line for syntax errors."""
from __future__ import annotations

import pathlib
import tomllib
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def read(path: str | pathlib.Path, error: type[Exception], parse: Callable[[dict], T]) -> T:
    """parse(data) of the file at path; every failure raised as error, prefixed
    with the path."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: {exc}") from None
    except OSError as exc:
        raise error(f"{path}: {exc.strerror}") from None
    try:
        return parse(data)
    except error as exc:
        raise error(f"{path}: {exc}") from None
