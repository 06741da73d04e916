"""Building the listening parts from the config file's ``[wake]``, ``[vad]``, ``[bargein]`` and
``[session]``."""

from __future__ import annotations

from edgevoice.config import Config, WakeModel
from edgevoice.listen.gate import WakeGate
from edgevoice.listen.vad import LocalEndpointer, UpstreamGate
from edgevoice.listen.wake import WakeModelError, WakeWordDetector, WakeWordSpec, check_spec

#: Silence sent after speech beyond the server's own silence_duration_ms, so that its turn
#: detection sees enough silence to close the turn even with network jitter.
TAIL_MARGIN_MS = 200
#: A wake word ends at most this long before its detection's stream time (the engines' lag,
#: 0.1 s for openWakeWord, with room to spare).
WORD_END_MARGIN_S = 0.5


def word_spec(model: WakeModel) -> WakeWordSpec:
    """The detector's spec of one configured model (a wake word or a stop word)."""
    return WakeWordSpec(model.name, threshold=model.threshold, trigger_level=model.trigger_level,
                        refractory_s=model.refractory_s, engine=model.engine,
                        sliding_window=model.sliding_window)


def _configured(cfg: Config) -> list[tuple[str, WakeModel]]:
    """Every configured model with its key path in the config file."""
    return ([(f"wake.models[{i}]", m) for i, m in enumerate(cfg.wake.models)]
            + [(f"bargein.stop_words[{i}]", m) for i, m in enumerate(cfg.bargein.stop_words)])


def wake_problems(cfg: Config) -> list[str]:
    """One line per configured model that cannot be used, as ``key.path: reason`` (the reason
    names the word and the file or key at fault); empty when all can. Loads each model with a
    plain interpreter and frees it: what :func:`wake_gate` would refuse, without building it."""
    problems = []
    for where, model in _configured(cfg):
        try:
            check_spec(word_spec(model))
        except WakeModelError as exc:
            problems.append(f"{where}: {exc}")
    return problems


def wake_gate(cfg: Config) -> WakeGate:
    """Every wake word model plus the stop-word models (``bargein.stop_words``) behind one VAD
    gate: one feature extractor per engine for all. Raises WakeModelError naming a model that
    is unknown, missing or corrupt."""
    specs = [word_spec(m) for _, m in _configured(cfg)]
    preroll = cfg.wake.preroll_ms
    return WakeGate(WakeWordDetector(specs, threads=cfg.wake.threads), enabled=cfg.wake.vad_gate,
                    aggressiveness=cfg.vad.aggressiveness, vad_frame_ms=cfg.vad.frame_ms,
                    pre_roll_s=None if preroll is None else preroll / 1000)


def upstream_tail_ms(cfg: Config) -> int:
    """The silence tail streamed after speech: the configured one, but never shorter than the
    server's silence_duration_ms plus a margin (else the server could not end the turn)."""
    td = cfg.session.turn_detection
    if td.type == "none":
        return cfg.vad.tail_ms
    return max(cfg.vad.tail_ms, td.silence_duration_ms + TAIL_MARGIN_MS)


def upstream_gate(cfg: Config, *, wake_late_s: float = 0.0) -> UpstreamGate:
    """The gate of what is streamed; ``wake_late_s``: how late a wake detection may come
    (its request is still streamed from the word's end)."""
    lookback_s = wake_late_s + WORD_END_MARGIN_S
    return UpstreamGate(aggressiveness=cfg.vad.aggressiveness, vad_frame_ms=cfg.vad.frame_ms,
                        prefix_padding_ms=cfg.vad.prefix_padding_ms,
                        tail_ms=upstream_tail_ms(cfg), lookback_ms=round(lookback_s * 1000))


def endpointer(cfg: Config) -> LocalEndpointer:
    """End of utterance decided locally, for ``turn_detection.type = "none"``."""
    return LocalEndpointer(aggressiveness=cfg.vad.aggressiveness, vad_frame_ms=cfg.vad.frame_ms,
                           silence_ms=cfg.vad.local_end_of_utterance_ms)
