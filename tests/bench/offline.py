"""Benchmark of the offline recogniser: the ``offline`` section of ``scripts/bench``.

The corpus: every template of every tool with sentences in the shipped example configs
(config/examples/car.toml and raspberry-pi.toml) and in the offline demo (its one tool), each
sampled ``per_template`` times (seeded: random choices of optional words, alternatives and
slot values; the arguments expected are those the sampled path gives, not what the
recogniser's matcher says), spoken by espeak-ng in :data:`VOICES`; plus
:data:`NON_COMMANDS` (everyday speech and near misses of the commands, in the same voices)
that must run nothing. Each utterance has 300 ms of microphone floor (−70 dBFS white noise)
before and after it, as the local endpointer hands it over. "noise" adds road-like rumble
(brown at −20 dBFS + pink at −40 dBFS, as the wake bench) to the whole utterance.

Figures:

* ``offline.command_accuracy`` (clean) / ``offline.command_accuracy_noise``: right tool and
  right arguments ÷ commands;
* ``offline.phrase_accuracy``: commands (clean) whose phrase the grammar search got right,
  whether or not they ran (the ceiling of ``command_accuracy``: what the confidence and the
  fit turn away of it);
* ``offline.wrong_runs`` / ``_noise``: commands that ran the wrong tool or wrong arguments
  (worse than running nothing);
* ``offline.false_runs`` / ``_noise``: non-command utterances that produced a command;
* ``offline.finish_ms_p50`` / ``_p95``: the utterance decoded as the daemon's recogniser
  process does (fed as it is spoken, :class:`~edgevoice.offline.worker.Listening`), the
  wall time left after its last frame (the searches' last frames and final pass, and the
  match); the accuracy and false-run figures are of this decoding too;
* ``offline.end_of_speech_to_tool_ms_p50`` / ``_p95``: from the end of the speech to the tool
  running, through the conversation core as the daemon ends an utterance (an early look at a
  pause, or the endpointer's end), with this machine's decoding times
  (:mod:`.offline_latency`; commands, clean); ``offline.early_end_share`` (how many ended at
  a pause) and ``offline.command_accuracy_live`` (right tool and arguments that way);
  ``offline.false_runs_live``: non-commands (clean) that ran a tool that way;
* ``offline.held_out_accuracy`` / ``_noise``, ``offline.held_out_false_runs`` / ``_noise``:
  the same on a held-out corpus (other random paths of the templates,
  :data:`HELD_OUT_NON_COMMANDS`), which the settings were not chosen on;
* ``offline.recogniser_mb`` / ``offline.load_s``: resident memory the first recogniser (the
  car example's) added, and the time it took to build;
* ``offline.cpu_s_per_audio_s``: CPU seconds (this process) per second of utterance audio
  while recognising (both searches and the match; on the board, it must stay well below 1
  for the decoding to keep up with the speech);
* the reference, measured in the same run: ``offline.command_accuracy_whole``,
  ``offline.false_runs_whole``, ``offline.decode_ms_p50_whole`` / ``_p95_whole`` (clean, each
  utterance decoded as a whole after its end, as before the recogniser decoded while the
  user spoke) and ``offline.end_of_speech_to_tool_ms_p50_whole`` / ``_p95_whole`` (through
  the core that way);
* ``offline.corpus``: how many commands, non-commands, voices.

The recogniser's settings were chosen on this corpus: check a change on the held-out figures
too (and keep them out of the choice, or they stop being held out), and count differences
of one or two utterances as noise (the figures move that much with the order the utterances
are decoded in).
"""

from __future__ import annotations

import functools
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevoice.audio.convert import read_wav, resample
from edgevoice.config import Config, load_config
from edgevoice.config.sentences import blocks, parse_template, slot_values, words
from edgevoice.devkit.demo import offline_config
from edgevoice.offline.grammar import sample
from edgevoice.offline.recognizer import Command, OfflineRecognizer
from edgevoice.offline.worker import Listening

from .offline_latency import FRAME, Live, live_figures, run_live
from .wake import road_noise, silence

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = (ROOT / "config" / "examples" / "car.toml",
            ROOT / "config" / "examples" / "raspberry-pi.toml")
VOICES = ("en-us", "en-us+f3", "en-gb-x-rp", "en-gb+m3")
RATE = 16000
PAD_S = 0.3


def configs() -> list[Config]:
    """The configs whose sentences the corpus speaks: the examples, and the offline demo's."""
    examples = [load_config(path) for path in EXAMPLES]
    # The demo talks to a port nobody listens on; the endpoint matters only for the check.
    return [*examples, offline_config(examples[1], "ws://127.0.0.1:9")]


NON_COMMANDS = (
    "what's the weather like in paris today",
    "how far is it to the next gas station",
    "play some music please",
    "call my mother",
    "send a message to john",
    "turn off the radio",
    "open the sunroof",
    "set an alarm for seven in the morning",
    "navigate to the nearest hospital",
    "who won the game last night",
    "tell me a joke",
    "what is the capital of france",
    "i am hungry",
    "remind me to buy milk",
    "how old is the president",
    "the kids are asleep in the back",
    "we should leave at five",
    "did you lock the front door",
    "turn left at the next corner",
    "is it going to rain tomorrow",
    "read me the news",
    "what's on my calendar",
    "close the trunk",
    "start the engine",
    "set the alarm for six thirty",
    "turn on the television",
    "how many miles are left",
    "open the garage door opener manual",
    "the kitchen is a mess",
    "my phone battery is low",
    "find a parking spot",
    "what song is this",
    "i think the fan belt is broken",
    "let's go to the beach this weekend",
)

#: The held-out check (``offline.held_out_*``): sentences the recogniser's settings were not
#: chosen on, with other random paths of the templates (:data:`HELD_OUT_SEED`).
HELD_OUT_NON_COMMANDS = (
    "can you find me a restaurant", "what time does the store close", "please stop talking",
    "i need to charge the car", "where did i park", "how is the traffic on the highway",
    "put on my favourite playlist", "text my wife that i am late", "is the window cracked",
    "the heater smells funny", "set the table for dinner", "turn up the bass",
    "lower the volume of the tv in the bedroom", "who is calling", "lights camera action",
    "open your mind", "light a candle", "the volume of the ocean is huge",
    "cool story bro", "what temperature is it outside")
HELD_OUT_SEED = 99


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    tool: str | None  # None: a non-command
    arguments: dict[str, Any]


def commands(config: Config, per_template: int = 2, seed: int = 7) -> list[tuple[str, str, dict]]:
    """(text, tool, arguments) sampled from every template of ``config``'s tools."""
    rng = random.Random(seed)
    out: list[tuple[str, str, dict]] = []
    for tool in config.tools:
        lists = {name: slot_values(spec) for name, spec in tool.slots.items()}
        for block in blocks(tool.sentences):
            sentence = parse_template(block.text)
            seen: set[str] = set()
            for _ in range(per_template * 4):
                if len(seen) >= per_template:
                    break
                args: dict[str, Any] = {}
                text = " ".join(words(sample(sentence.expression, lists, rng, args)))
                if text in seen:
                    continue
                seen.add(text)
                out.append((text, tool.name, {**block.arguments, **args}))
    return out


@functools.cache
def speak(text: str, voice: str) -> bytes:
    """espeak-ng speech at 16 kHz PCM16 with the microphone floor before and after."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng not installed: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True,
                       capture_output=True)
        pcm, native = read_wav(wav)
    pad = silence(PAD_S, seed=len(text))
    floor = np.frombuffer(silence(len(pcm) / 2 / native + 0.1, seed=3), "<i2")
    speech = np.frombuffer(resample(pcm, native, RATE), "<i2").astype(np.float64)
    speech += floor[: len(speech)]
    return pad + np.clip(np.round(speech), -32768, 32767).astype("<i2").tobytes() + pad


def with_noise(pcm: bytes, seed: int = 2) -> bytes:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    x = x + road_noise(len(x) / RATE + 0.01, seed=seed)[: len(x)]
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


def corpus(config: Config, voices: Sequence[str] = VOICES, per_template: int = 2,
           non_commands: Sequence[str] = NON_COMMANDS, seed: int = 7) -> list[Utterance]:
    out = [Utterance(text, voice, tool, args)
           for text, tool, args in commands(config, per_template, seed)
           for voice in voices]
    out += [Utterance(text, voice, None, {}) for text in non_commands for voice in voices]
    return out


@dataclass
class Outcome:
    utterance: Utterance
    result: Any
    latency_ms: float

    @property
    def right(self) -> bool:
        r = self.result
        return isinstance(r, Command) and r.tool == self.utterance.tool and \
            r.arguments == self.utterance.arguments

    @property
    def phrase_right(self) -> bool:
        """The grammar search's phrase is the right command, run or not."""
        r = self.result
        if isinstance(r, Command):
            return self.right
        return (r.details.get("tool"), r.details.get("arguments")) == (
            self.utterance.tool, self.utterance.arguments)

    @property
    def ran(self) -> bool:
        return isinstance(self.result, Command)


def recognise(recognizer: OfflineRecognizer, pcm: bytes) -> tuple[Any, float]:
    """The utterance as the endpointer hands it over, decoded as the daemon's recogniser
    process does (:class:`Listening`: fed 20 ms at a time, then finished): the result and
    the wall time of the finish (the decoding left after the utterance's last frame)."""
    listening = Listening(recognizer)
    for i in range(0, len(pcm), FRAME):
        listening.feed(pcm[i:i + FRAME])
    t = time.perf_counter()
    result = listening.finish()
    return result, (time.perf_counter() - t) * 1000


def recognise_whole(recognizer: OfflineRecognizer, pcm: bytes) -> tuple[Any, float]:
    """The reference: the utterance decoded as a whole after its end (as the daemon did
    before it decoded while the user spoke); the result and the wall time."""
    t = time.perf_counter()
    result = recognizer.recognize(pcm)
    return result, (time.perf_counter() - t) * 1000


def run_corpus(config: Config, utterances: Sequence[Utterance], noise: bool = False,
               threshold: float | None = None, whole: bool = False,
               ) -> tuple[list[Outcome], float, float]:
    """Every utterance through one recogniser (``whole``: the reference way): outcomes, CPU
    seconds, audio seconds."""
    recognizer = OfflineRecognizer(config.tools) if threshold is None else \
        OfflineRecognizer(config.tools, threshold=threshold)
    outcomes: list[Outcome] = []
    cpu = audio = 0.0
    for u in utterances:
        pcm = speak(u.text, u.voice)
        if noise:
            pcm = with_noise(pcm, seed=len(u.text))
        c0 = time.process_time()
        result, ms = (recognise_whole if whole else recognise)(recognizer, pcm)
        cpu += time.process_time() - c0
        audio += len(pcm) / 2 / RATE
        outcomes.append(Outcome(u, result, ms))
    return outcomes, cpu, audio


def _rss_mb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) // 1024


def run_offline(per_template: int = 2) -> dict[str, object]:
    """The section's figures (see the module docs)."""
    values: dict[str, object] = {}
    clean: list[Outcome] = []
    noisy: list[Outcome] = []
    live: list[Live] = []
    live_others: list[Live] = []  # non-commands through the core: any run is a false one
    held_clean: list[Outcome] = []
    held_noisy: list[Outcome] = []
    whole: list[Outcome] = []  # the reference: clean, decoded as a whole
    live_whole: list[Live] = []
    cpu = audio = 0.0
    n_commands = 0
    corpus_configs = configs()
    for i, config in enumerate(corpus_configs):
        if i == 0:  # what the daemon holds for it (the first build: the library too)
            rss, started = _rss_mb(), time.perf_counter()
            recognizer = OfflineRecognizer(config.tools)
            values["offline.load_s"] = round(time.perf_counter() - started, 2)
            values["offline.recogniser_mb"] = _rss_mb() - rss
        else:
            recognizer = OfflineRecognizer(config.tools)
        utterances = corpus(config, per_template=per_template)
        n_commands += sum(u.tool is not None for u in utterances)
        for noise, sink in ((False, clean), (True, noisy)):
            outcomes, c, a = run_corpus(config, utterances, noise=noise)
            sink.extend(outcomes)
            cpu += c
            audio += a
        whole += run_corpus(config, utterances, whole=True)[0]
        held = corpus(config, per_template=per_template, non_commands=HELD_OUT_NON_COMMANDS,
                      seed=HELD_OUT_SEED)
        held_clean += run_corpus(config, held)[0]
        held_noisy += run_corpus(config, held, noise=True)[0]
        # Through the core, as the daemon ends an utterance (see offline_latency).
        live += [run_live(config, recognizer, speak(u.text, u.voice), u.tool, u.arguments)
                 for u in utterances if u.tool is not None]
        live_others += [run_live(config, recognizer, speak(u.text, u.voice), "", {})
                        for u in utterances if u.tool is None]
        live_whole += [run_live(config, recognizer, speak(u.text, u.voice), u.tool, u.arguments,
                                whole=True) for u in utterances if u.tool is not None]

    def accuracy(outcomes: list[Outcome]) -> float:
        cmds = [o for o in outcomes if o.utterance.tool is not None]
        return round(sum(o.right for o in cmds) / max(1, len(cmds)), 3)

    def ms(outcomes: list[Outcome], q: int) -> float:
        return round(float(np.percentile(
            [o.latency_ms for o in outcomes if o.utterance.tool is not None], q)), 1)

    values["offline.command_accuracy"] = accuracy(clean)
    values["offline.command_accuracy_noise"] = accuracy(noisy)
    values["offline.phrase_accuracy"] = round(
        sum(o.phrase_right for o in clean if o.utterance.tool is not None) / max(1, n_commands), 3)
    values["offline.wrong_runs"] = sum(o.ran and not o.right for o in clean
                                       if o.utterance.tool is not None)
    values["offline.wrong_runs_noise"] = sum(o.ran and not o.right for o in noisy
                                             if o.utterance.tool is not None)
    values["offline.false_runs"] = sum(o.ran for o in clean if o.utterance.tool is None)
    values["offline.false_runs_noise"] = sum(o.ran for o in noisy if o.utterance.tool is None)
    values["offline.held_out_accuracy"] = accuracy(held_clean)
    values["offline.held_out_accuracy_noise"] = accuracy(held_noisy)
    values["offline.held_out_false_runs"] = sum(o.ran for o in held_clean
                                                if o.utterance.tool is None)
    values["offline.held_out_false_runs_noise"] = sum(o.ran for o in held_noisy
                                                      if o.utterance.tool is None)
    values["offline.finish_ms_p50"] = ms(clean + noisy, 50)
    values["offline.finish_ms_p95"] = ms(clean + noisy, 95)
    values.update(live_figures(live))
    # The reference, side by side: decoded as a whole after the end of the utterance.
    values["offline.command_accuracy_whole"] = accuracy(whole)
    values["offline.false_runs_whole"] = sum(o.ran for o in whole if o.utterance.tool is None)
    values["offline.decode_ms_p50_whole"] = ms(whole, 50)
    values["offline.decode_ms_p95_whole"] = ms(whole, 95)
    values.update({k: v for k, v in live_figures(live_whole, "_whole").items()
                   if "end_of_speech" in k})
    values["offline.false_runs_live"] = sum(o.latency_ms is not None for o in live_others)
    values["offline.cpu_s_per_audio_s"] = round(cpu / max(audio, 1e-9), 3)
    values["offline.corpus"] = (f"{n_commands} commands + "
                                f"{len(NON_COMMANDS) * len(VOICES) * len(corpus_configs)} "
                                f"non-commands, voices {', '.join(VOICES)}, clean and noise")
    return values


TARGETS = [
    ("offline.command_accuracy", ">=", 0.90),
    ("offline.false_runs", "==", 0),
    ("offline.false_runs_noise", "==", 0),
    ("offline.false_runs_live", "==", 0),
    ("offline.end_of_speech_to_tool_ms_p50", "<=", 300),
]
