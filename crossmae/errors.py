"""Exceptions that cross a DataLoader worker boundary intact.

torch re-raises an error of a worker process in the main process as ``type(text)``, ``text`` being
``"Caught <Type> in DataLoader worker process <n>.\\nOriginal Traceback (...):\\n...\\n<module>.<Type>:
<message>"``; a type that cannot be built from one string becomes a ``RuntimeError`` (the traceback
the user then sees), and one that can is built from the whole traceback text. Every exception class of
the toolkit therefore takes one message (extra fields are keyword arguments, kept as attributes, so
pickle restores them too); those raised where workers run (readers, datasets, the config) derive from
:class:`WorkerSafe`, which recovers the original message from torch's text, so that the type and the
one-line message survive. The CLI reduces any other type the same way (crossmae.cli.error_message).
"""
from __future__ import annotations


def qualified_name(cls: type) -> str:
    """The type's name as ``traceback`` prints it on an exception's last line."""
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def original_message(text: str, cls: type) -> str:
    """The message an exception of type ``cls`` had in a worker, given the text torch re-raised it with;
    any other text is returned unchanged."""
    if not text.startswith(f"Caught {cls.__name__} ") or "\nOriginal Traceback" not in text:
        return text
    # the traceback's last exception is the one raised (chained causes come first)
    name = qualified_name(cls)
    at = text.rfind(f"\n{name}: ")
    if at >= 0:
        return text[at + len(name) + 3:].rstrip("\n")
    return "" if text.rstrip("\n").endswith(f"\n{name}") else text  # raised without a message


class WorkerSafe:
    """Mixin placed before the exception base (``class ConfigError(WorkerSafe, ValueError)``): one
    positional message, fields as keyword arguments, torch's worker text reduced to the message."""

    def __init__(self, message: object = "", **fields):
        super().__init__(original_message(str(message), type(self)))
        self.__dict__.update(fields)


class CheckpointError(ValueError):
    """A weights file that cannot be used as asked (unreadable, foreign, of another architecture): raised by
    the checkpoint readers of the engine and by the models' own loaders, so it lives below both."""
