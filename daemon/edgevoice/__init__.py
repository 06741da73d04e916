"""edgevoice: a voice assistant daemon for edge hardware."""

__version__ = "0.1.0"
