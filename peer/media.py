"""Synthetic media sources and sinks for tests and load runs (no numpy, low CPU).

* :class:`SyntheticVideoTrack` — moving yuv420p frames of a given colour, with a sliding bar and a binary
  frame counter; a small set of frames is pre-generated, each ``recv()`` only copies planes.
* :class:`SyntheticAudioTrack` — a 440 Hz tone, 20 ms s16 mono frames at 48 kHz.
* :class:`ForwardingTrack` — re-emits what another track yields (e.g. encoded ``av.Packet`` from a
  pass-through receiver), so an SFU can feed a subscriber's sender without decoding.
* :class:`TrackSink` (alias :data:`FrameCounter`) — consumes a remote track and keeps counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import time
from array import array
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = [
    "ForwardingTrack",
    "FrameCounter",
    "SyntheticAudioTrack",
    "SyntheticVideoTrack",
    "TrackSink",
    "rgb_to_yuv",
]

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_SAMPLE_RATE = 48000
AUDIO_SAMPLES_PER_FRAME = 960  # 20 ms
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_SAMPLE_RATE)


def rgb_to_yuv(r: int, g: int, b: int) -> tuple[int, int, int]:
    """BT.601 limited-range RGB → (Y, U, V), as libvpx/ffmpeg expect for yuv420p."""
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return round(y), round(u), round(v)


class Pacer:
    """Sleeps so that frame ``n`` is released at ``start + n * period``."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.start: float | None = None
        self.count = 0

    async def next(self) -> int:
        if self.start is None:
            self.start = time.monotonic()
        else:
            self.count += 1
            wait = self.start + self.count * self.period - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        return self.count


class SyntheticVideoTrack(MediaStreamTrack):
    """Moving yuv420p test frames: flat ``colour``, a luma bar sliding right, and a 12-bit frame counter.

    The bar and counter cover < 8% of the picture, so the mean colour stays close to ``colour``.
    """

    kind = "video"

    def __init__(
        self,
        width: int = 320,
        height: int = 240,
        fps: int = 30,
        colour: tuple[int, int, int] = (40, 160, 220),
        *,
        variants: int = 30,
    ) -> None:
        super().__init__()
        if width % 16 or height % 16:
            raise ValueError("width and height must be multiples of 16")
        self.width = width
        self.height = height
        self.fps = fps
        self.colour = colour
        self.yuv = rgb_to_yuv(*colour)
        self.frames_sent = 0
        self._pacer = Pacer(1 / fps)
        self._variants = [self._make_planes(i, variants) for i in range(variants)]

    def _make_planes(self, index: int, variants: int) -> tuple[bytes, bytes, bytes]:
        w, h = self.width, self.height
        y0, u0, v0 = self.yuv
        luma = bytearray([y0]) * (w * h)
        bar_y = 235 if y0 < 128 else 16
        # 16-px bar sliding across the picture
        x0 = (index * (w - 16)) // max(variants - 1, 1)
        bar = bytes([bar_y]) * 16
        for row in range(h):
            luma[row * w + x0 : row * w + x0 + 16] = bar
        # 12-bit counter of 8x8 blocks along the top-left: white = 1, black = 0
        for bit in range(12):
            value = 235 if (index >> bit) & 1 else 16
            block = bytes([value]) * 8
            for row in range(8):
                start = row * w + bit * 8
                luma[start : start + 8] = block
        chroma = (w // 2) * (h // 2)
        return bytes(luma), bytes([u0]) * chroma, bytes([v0]) * chroma

    def planes(self, n: int) -> tuple[bytes, bytes, bytes]:
        """The Y, U and V planes of frame ``n`` (the pictures repeat every ``variants`` frames)."""
        return self._variants[n % len(self._variants)]

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.next()
        planes = self.planes(n)
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, data in zip(frame.planes, planes, strict=True):
            if plane.line_size == plane.width:
                plane.update(data)
            else:  # padded rows
                padded = bytearray(plane.buffer_size)
                for row in range(plane.height):
                    start = row * plane.line_size
                    padded[start : start + plane.width] = data[row * plane.width : (row + 1) * plane.width]
                plane.update(bytes(padded))
        frame.pts = round(n * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame


class SyntheticAudioTrack(MediaStreamTrack):
    """A continuous sine tone (default 440 Hz) in 20 ms, 48 kHz, s16 mono frames."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.3) -> None:
        super().__init__()
        self.frequency = frequency
        self.frames_sent = 0
        self.muted = False
        """Silence instead of the tone (the participant's own mute, e.g. obeying the therapist's ``mute``)."""
        self._pacer = Pacer(AUDIO_SAMPLES_PER_FRAME / AUDIO_SAMPLE_RATE)
        # 5 frames = 100 ms: a whole number of periods for 440 Hz, so the loop is seamless.
        total = AUDIO_SAMPLES_PER_FRAME * 5
        peak = int(32767 * amplitude)
        samples = array(
            "h", (int(peak * math.sin(2 * math.pi * frequency * i / AUDIO_SAMPLE_RATE)) for i in range(total))
        )
        raw = samples.tobytes()
        size = AUDIO_SAMPLES_PER_FRAME * 2
        self._chunks = [raw[i : i + size] for i in range(0, len(raw), size)]

    def chunk(self, n: int) -> bytes:
        """The s16 samples of frame ``n`` (the tone, whether muted or not)."""
        return self._chunks[n % len(self._chunks)]

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.next()
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES_PER_FRAME)
        chunk = self.chunk(n)
        frame.planes[0].update(bytes(len(chunk)) if self.muted else chunk)
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = n * AUDIO_SAMPLES_PER_FRAME
        frame.time_base = AUDIO_TIME_BASE
        self.frames_sent += 1
        return frame


class ForwardingTrack(MediaStreamTrack):
    """Yields whatever ``source.recv()`` yields (frames or encoded ``av.Packet``), unchanged.

    For one subscriber per source; for several, use ``aiortc.contrib.media.MediaRelay`` with
    ``buffered=False`` on the pass-through track instead.
    """

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            return await self._source.recv()
        except MediaStreamError:
            self.stop()
            raise


class TrackSink:
    """Consumes a (remote) track in a task and counts what arrives.

    Decoded video frames, decoded audio frames and encoded ``av.Packet`` are all counted in ``frames``;
    ``packets``/``keyframes`` count encoded packets. ``mean_yuv()`` gives the mean Y/U/V of the last video
    frame so a test can tell the right colour from garbage. Use ``start()`` / ``await stop()``, or
    ``async with TrackSink(track):``.
    """

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.frames = 0
        self.packets = 0
        self.keyframes = 0
        self.first_frame_time: float | None = None
        """Seconds from ``start()`` to the first frame."""
        self.last_frame_time: float | None = None
        self.ended = False
        self.last_video_frame: av.VideoFrame | None = None
        self._started_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._event = asyncio.Event()

    def start(self) -> TrackSink:
        if self._task is None:
            self._started_at = time.monotonic()
            self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> TrackSink:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        try:
            while True:
                item = await self.track.recv()
                now = time.monotonic() - self._started_at
                if self.first_frame_time is None:
                    self.first_frame_time = now
                self.last_frame_time = now
                self.frames += 1
                if isinstance(item, av.Packet):
                    self.packets += 1
                    if item.is_keyframe:
                        self.keyframes += 1
                elif isinstance(item, av.VideoFrame):
                    self.last_video_frame = item
                self._event.set()
        except MediaStreamError:
            self.ended = True

    async def wait_frames(self, count: int, within: float = 5.0) -> bool:
        """Wait until at least ``count`` frames arrived; False on timeout."""
        deadline = time.monotonic() + within
        while self.frames < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.ended:
                return self.frames >= count
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), remaining)
        return True

    @property
    def fps(self) -> float:
        """Frames per second between the first and the last frame (0 with fewer than 2 frames)."""
        if self.first_frame_time is None or self.last_frame_time is None or self.frames < 2:
            return 0.0
        span = self.last_frame_time - self.first_frame_time
        return (self.frames - 1) / span if span > 0 else 0.0

    def mean_yuv(self) -> tuple[float, float, float] | None:
        """Mean Y, U, V of the last decoded video frame (converted to yuv420p if needed)."""
        frame = self.last_video_frame
        if frame is None:
            return None
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        means = []
        for plane in frame.planes:
            data = memoryview(plane).cast("B")
            w, h, stride = plane.width, plane.height, plane.line_size
            if stride == w:
                total = sum(data[: w * h])
            else:
                total = sum(sum(data[r * stride : r * stride + w]) for r in range(h))
            means.append(total / (w * h))
        return means[0], means[1], means[2]


FrameCounter = TrackSink
"""Alias: the brief's name for :class:`TrackSink`."""
