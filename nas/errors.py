"""The one exception type for bad user input: the CLI prints its message as a single line."""


class ConfigError(ValueError):
    """Bad input from the user: an unknown name, an arch outside the space, a malformed file."""
