"""User-facing error types: the CLI prints them as one line and exits with code 2."""


class SimError(Exception):
    """An error caused by the user's input (config, trace, profile), not by a bug."""


class ConfigError(SimError):
    """A configuration value is missing, unknown or out of range; the message names the dotted key."""


class InputError(SimError):
    """A data file (trace, embeddings, profile) is malformed; the message names the file and field."""


class RegistryError(SimError):
    """A name was registered twice, or looked up but never registered."""
