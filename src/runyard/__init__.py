"""runyard: command-line programs as a robust HTTP service."""

__version__ = "0.1.0"
