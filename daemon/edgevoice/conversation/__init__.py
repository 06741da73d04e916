"""The conversation core (sans-I/O) and its echo guard."""
