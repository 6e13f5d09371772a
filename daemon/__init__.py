"""aud: OpenFace 3.0 facial Action Unit extraction, as a daemon and a one-shot command."""

__version__ = "0.1.0"
