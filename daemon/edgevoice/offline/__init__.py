"""Offline commands: the declared sentences of the tools recognised on the device, with no
service (see :mod:`edgevoice.offline.recognizer` and :mod:`edgevoice.offline.grammar`; the
sentences themselves are checked by :mod:`edgevoice.config.sentences`)."""
