"""Local listening: wake word (openWakeWord and microWakeWord models) behind a VAD gate, and
the VAD decisions for the audio streamed upstream. Frames in, decisions out; no I/O anywhere in
this package.

* :mod:`edgevoice.listen.wake` — :class:`WakeWordDetector`: several models on either engine,
  thresholds, trigger levels, refractory periods; :class:`Detection`.
* :mod:`edgevoice.listen.engine` — what the engines share (the interface the gate relies on);
  :mod:`edgevoice.listen.oww` and :mod:`edgevoice.listen.micro` — the two engines;
  :mod:`edgevoice.listen.tflite` — the TFLite C binding (XNNPACK delegate) they run on.
* :mod:`edgevoice.listen.gate` — :class:`WakeGate`: runs the detector only around speech,
  with a pre-roll ring buffer; decisions identical to the ungated detector.
* :mod:`edgevoice.listen.vad` — :class:`UpstreamGate` (what to stream while listening) and
  :class:`LocalEndpointer` (end of utterance when the server's turn detection is off).
* :mod:`edgevoice.listen.worker` — :class:`~edgevoice.listen.worker.WakeWorker`: the gate in
  one worker thread behind a bounded queue, so that no model runs on the event loop (the
  one module here with a thread; not imported by this package).
"""

from edgevoice.listen.gate import WakeGate
from edgevoice.listen.vad import (
    AudioChunk,
    EndpointDecision,
    LocalEndpointer,
    SpeechDetector,
    UpstreamDecision,
    UpstreamGate,
)
from edgevoice.listen.wake import (
    BUILTIN_MODELS,
    ENGINES,
    MICRO_BUILTIN_MODELS,
    Detection,
    WakeModelError,
    WakeWordDetector,
    WakeWordSpec,
)

__all__ = [
    "BUILTIN_MODELS",
    "ENGINES",
    "MICRO_BUILTIN_MODELS",
    "AudioChunk",
    "Detection",
    "EndpointDecision",
    "LocalEndpointer",
    "SpeechDetector",
    "UpstreamDecision",
    "UpstreamGate",
    "WakeGate",
    "WakeModelError",
    "WakeWordDetector",
    "WakeWordSpec",
]
