"""Errors that reach the user as one line: the CLI prints their message and exits non-zero, no traceback."""


class TransferlabError(Exception):
    """Base class: anything the user can fix by changing an argument, a file or a setting."""


class DataError(TransferlabError):
    """The data source cannot be used as given (missing path, no images, one class, a bad CSV...)."""


class BackboneError(TransferlabError):
    """A backbone name is unknown, or its weights cannot be found or do not fit."""


class ConfigError(TransferlabError):
    """A setting is out of range or contradicts another."""


class Interrupted(TransferlabError):
    """Ctrl-C or SIGTERM during training: the step finished and a resumable checkpoint was written."""
