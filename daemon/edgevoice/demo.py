"""``edgevoice demo``: one spoken question through the Voice Live link, end to end.

Without ``--endpoint`` it starts the loopback simulator in-process (127.0.0.1, a random port
and a random API key), so it needs neither an Azure account nor a sound card. It streams the
bundled recording of a spoken question as one user turn (followed by silence, so the server's
turn detection closes the turn), writes the reply audio to a WAV file and prints a timeline
with milliseconds since start: connected, session ready, speech started/stopped, first reply
audio, reply done. ``--json`` prints one JSON object per timeline entry instead.
"""

from __future__ import annotations

import asyncio
import json
import secrets as _random
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from edgevoice.audio.convert import (
    OUTPUT_FORMAT_RATES,
    decode,
    encode,
    read_wav,
    resample,
    wire_rate,
    write_wav,
)
from edgevoice.config import Config
from edgevoice.secrets import Secret
from edgevoice.voicelive import events as ev
from edgevoice.voicelive.auth import make_auth
from edgevoice.voicelive.link import LinkDown, LinkUp, ServiceError, TurnAbandoned, VoiceLiveLink
from edgevoice.voicelive.script import Script
from edgevoice.voicelive.simulator import Simulator

CHUNK_MS = 20


def data_path(name: str) -> Path:
    return Path(str(resources.files("edgevoice") / "data" / name))


@dataclass
class Timeline:
    """Prints timeline entries as they happen (ms since ``t0``), text or JSON lines."""

    out: TextIO
    as_json: bool
    t0: float = field(default_factory=time.monotonic)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def mark(self, event: str, **details: Any) -> None:
        entry = {"t_ms": round((time.monotonic() - self.t0) * 1000), "event": event, **details}
        self.entries.append(entry)
        if self.as_json:
            self.out.write(json.dumps(entry) + "\n")
        else:
            extra = "  ".join(f"{k}={v}" for k, v in details.items())
            self.out.write(f"{entry['t_ms']:>7} ms  {event:<22} {extra}".rstrip() + "\n")
        self.out.flush()


async def run_demo(
    cfg: Config,
    *,
    out: TextIO,
    as_json: bool = False,
    endpoint: str | None = None,
    api_key: Secret | None = None,
    output: Path = Path("demo-reply.wav"),
    recording: Path | None = None,
    timeout_s: float = 60.0,
) -> int:
    """Run the demo; returns the process exit code (0 when a reply was received)."""
    timeline = Timeline(out, as_json)
    simulator: Simulator | None = None
    vl = cfg.voicelive
    if endpoint is None:
        key = api_key or Secret(_random.token_urlsafe(24))
        simulator = Simulator(script=Script.load(data_path("demo-script.toml")),
                              api_key=key.reveal(), pace=0.0)
        await simulator.start()
        vl = vl.model_copy(update={"endpoint": simulator.url, "model": vl.model or "gpt-realtime"})
        api_key = key
        timeline.mark("simulator", url=simulator.url)
    else:
        vl = type(vl).model_validate({**vl.model_dump(exclude_unset=True), "endpoint": endpoint})
    auth = make_auth(vl, api_key)
    session = cfg.request_session()
    link = VoiceLiveLink(vl, session, auth)
    pcm, rate = read_wav(recording or data_path("question.wav"))
    in_rate = wire_rate(session.input_audio_format or "pcm16",
                        session.input_audio_sampling_rate or 24000)
    fmt_out = session.output_audio_format or "pcm16"
    reply = bytearray()
    status = 1
    try:
        link.start()
        timeline.mark("connecting", endpoint=vl.endpoint)
        status = await asyncio.wait_for(
            _converse(link, timeline, pcm, rate, in_rate, session.input_audio_format or "pcm16",
                      fmt_out, reply),
            timeout_s,
        )
    except TimeoutError:
        timeline.mark("timeout", after_s=timeout_s)
    finally:
        await link.close()
        await auth.close()
        if simulator is not None:
            await simulator.close()
    out_rate = OUTPUT_FORMAT_RATES.get(fmt_out, 24000)
    write_wav(output, bytes(reply), out_rate)
    timeline.mark("wrote", file=str(output), audio_ms=round(len(reply) / 2 / out_rate * 1000))
    return status


async def _converse(
    link: VoiceLiveLink,
    timeline: Timeline,
    pcm: bytes,
    rate: int,
    in_rate: int,
    in_fmt: str,
    out_fmt: str,
    reply: bytearray,
) -> int:
    first_audio = True
    sent = False
    while True:
        item = await link.events.get()
        if isinstance(item, LinkUp):
            timeline.mark("session ready", reconnected=item.reconnected)
            if not sent:
                _send_recording(link, pcm, rate, in_rate, in_fmt)
                sent = True
                timeline.mark("question sent", audio_ms=round(len(pcm) / 2 / rate * 1000))
        elif isinstance(item, LinkDown):
            retry = round(item.retry_in or 0, 2)
            timeline.mark("disconnected", reason=item.reason, retry_in_s=retry)
        elif isinstance(item, TurnAbandoned):
            timeline.mark("turn abandoned", reason=item.reason)
            return 1
        elif isinstance(item, ServiceError):
            if not item.benign:
                timeline.mark("service error", message=item.message, caused_by=item.caused_by)
        elif isinstance(item, ev.SessionCreated):
            timeline.mark("connected", session=item.session.id)
        elif isinstance(item, ev.InputAudioBufferSpeechStarted):
            timeline.mark("speech started", audio_start_ms=item.audio_start_ms)
        elif isinstance(item, ev.InputAudioBufferSpeechStopped):
            timeline.mark("speech stopped", audio_end_ms=item.audio_end_ms)
        elif isinstance(item, ev.ConversationItemInputAudioTranscriptionCompleted):
            timeline.mark("user said", text=json.dumps(item.transcript))
        elif isinstance(item, ev.ResponseAudioDelta):
            if first_audio:
                timeline.mark("first reply audio")
                first_audio = False
            reply += decode(item.audio_bytes(), out_fmt)
        elif isinstance(item, ev.ResponseAudioTranscriptDone):
            timeline.mark("assistant said", text=json.dumps(item.transcript))
        elif isinstance(item, ev.ResponseDone):
            timeline.mark("reply done", status=item.response.status)
            return 0 if reply else 1


def _send_recording(link: VoiceLiveLink, pcm: bytes, rate: int, in_rate: int, fmt: str) -> None:
    """The recording, then 1.2 s of silence so the server's VAD ends the turn."""
    audio = resample(pcm, rate, in_rate) + bytes(int(in_rate * 1.2) * 2)
    step = in_rate * CHUNK_MS // 1000 * 2
    for i in range(0, len(audio), step):
        link.append_audio(encode(audio[i : i + step], fmt))
