"""Which VP8 temporal layer a subscriber gets, from its own feedback (pure; time is the parameter ``now``).

Inputs, per subscriber video slot: REMB (the bandwidth its receiver estimates), receiver reports (fraction
lost) and NACKs; and, per publisher stream, what each temporal layer costs (:class:`LayerMeter`). Output:
``max_layer`` for the slot's :class:`server.sfu.rtp.Forwarder` — 2 (all of L1T3), 1, 0 (a quarter of the
frame rate), or :data:`server.sfu.rtp.PAUSED` (no video: even the base layer does not fit; audio is never
dropped for video). The forwarder applies a change at a safe point (a key frame or a layer-sync frame).

Policy (one decision per feedback report, ~1 per second):

* with a REMB younger than :data:`REMB_TTL`: the highest layer whose cumulative bitrate is at most
  :data:`REMB_TRUST` times the estimate (a REMB only caps when it is far below the stream), never below the base
  layer: a REMB alone never pauses (while paused, the receiver's estimate sees only the audio);
* loss (receiver reports, or the share of the last :data:`NACK_WINDOW` packets sent that were NACKed, each
  number once): above :data:`LOSS_HIGH` step one layer down (at most every :data:`STEP_DOWN_EVERY`, and each
  step on evidence gathered after the last one; from the base layer, pause above :data:`LOSS_PAUSE`: the only
  way into a pause); below :data:`LOSS_LOW` for :data:`STEP_UP_AFTER`,
  step one layer up (a paused subscriber tries the base layer again after :data:`RETRY_PAUSED_AFTER`);
* the result is the lower of the two. A paused subscriber resumes only by the retry (its REMB, seeing only the
  audio, says nothing about the video).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .rtp import PAUSED

TOP = 2
"""The highest temporal layer of L1T3."""
REMB_TRUST = 3.0
"""A receiver's REMB follows what it is sent (it cannot see more than that without probing, which the SFU does
not do), so it is a cap only when it is far below the stream: a layer is too much when it costs more than
``REMB_TRUST`` times the estimate. Loss is the primary signal."""
REMB_TTL = 3.0
LOSS_HIGH = 0.10
LOSS_LOW = 0.02
LOSS_PAUSE = 0.20
"""The base layer is paused only above this loss: with the SFU repairing losses from its buffer it survives
moderate loss, and a pause is a frozen picture for at least :data:`RETRY_PAUSED_AFTER`."""
STEP_DOWN_EVERY = 1.5
SETTLE = 1.0
"""After a step down, loss reports and NACKs are ignored this long: they describe what was sent before it (a
report covers ~1 s), and counted against the lower layer they paused subscribers whose base layer fitted."""
NACK_WINDOW = 50
"""Video packets sent before NACKs make a loss rate: at the base layer (~25 packets/s) a decision every 0.5 s saw
~12 packets, and two losses of them (3 % random loss) read as 17 %."""
STEP_UP_AFTER = 5.0
RETRY_PAUSED_AFTER = 8.0
METER_WINDOW = 1.0
NACK_MEMORY = 1024
"""NACKed sequence numbers remembered (each counts as one loss once): aiortc repeats a NACK for 128 packets,
~5 s of a base layer."""


@dataclass
class LayerMeter:
    """Bytes per temporal layer of one publisher stream, turned into bitrates over ~1 s windows."""

    bytes: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    rates: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    """bits/s per layer (index = temporal layer id), from the last complete window."""
    _last: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    _since: float | None = None

    def add(self, tid: int, size: int) -> None:
        self.bytes[tid & 3] += size

    def tick(self, now: float) -> None:
        if self._since is None:
            self._since = now
            self._last = list(self.bytes)
            return
        span = now - self._since
        if span >= METER_WINDOW:
            self.rates = [8 * (b - a) / span for a, b in zip(self._last, self.bytes, strict=True)]
            self._last = list(self.bytes)
            self._since = now

    def cumulative(self, layer: int) -> float:
        """bits/s a subscriber needs to get every layer up to ``layer``."""
        return sum(self.rates[: layer + 1]) if layer >= 0 else 0.0


@dataclass
class LayerChooser:
    """The layer decision of one subscriber video slot."""

    layer: int = TOP
    remb: float | None = None
    remb_at: float = float("-inf")
    loss: float = 0.0
    last_down: float = float("-inf")
    low_loss_since: float | None = None
    paused_since: float | None = None
    nacked: int = 0
    """Sequence numbers NACKed for the first time since the NACK window began..."""
    nack_packets: int = 0
    """... and the video packets sent in that window."""
    _nack_seen: set[int] = field(default_factory=set)
    _nack_order: deque[int] = field(default_factory=deque)
    decisions: int = 0

    def on_remb(self, bitrate: float, now: float) -> None:
        self.remb = bitrate
        self.remb_at = now

    def on_loss(self, fraction_lost: int, now: float | None = None) -> None:
        """``fraction_lost`` as in RTCP receiver reports (0..255 = 0..~100 %). A report that arrives within
        :data:`SETTLE` of a step down measured (mostly) what was sent before it, and is ignored."""
        if now is not None and now - self.last_down < SETTLE:
            return
        self.loss = max(0, min(255, fraction_lost)) / 256

    def on_nack(self, lost: list[int], now: float | None = None) -> None:
        """The sequence numbers of one NACK. Receivers repeat a NACK for every packet still missing whenever
        another goes missing (aiortc on each new gap, browsers on a timer), so each number counts once: counting
        NACKed numbers overstated the loss several times over on a congested link and paused subscribers whose
        base layer fitted."""
        seen, order = self._nack_seen, self._nack_order
        settling = now is not None and now - self.last_down < SETTLE  # losses of what was sent before the step
        for seq in lost:
            if seq in seen:
                continue
            seen.add(seq)
            order.append(seq)
            self.nacked += not settling
            if len(order) > NACK_MEMORY:
                seen.discard(order.popleft())

    def decide(self, meter: LayerMeter, now: float, packets: int = 0) -> int:
        """The layer the subscriber should get now. ``packets``: video packets sent to it since the last call
        (turns the NACK count into a loss rate)."""
        self.decisions += 1
        if now - self.last_down >= SETTLE:
            self.nack_packets += max(0, packets)
        if self.nack_packets >= NACK_WINDOW:
            self.loss = max(self.loss, min(1.0, self.nacked / self.nack_packets))
            self.nacked = self.nack_packets = 0
        # a publisher without temporal layers (all in layer 0) has only "all" or "nothing" to offer
        top = max((tid for tid in range(TOP + 1) if meter.rates[tid] > 0), default=TOP)
        if self.layer > top:
            self.layer = top
        by_loss = self._by_loss(now)
        by_remb = self._by_remb(meter, now)
        layer = min(by_loss, by_remb)
        if layer == PAUSED and self.layer != PAUSED:
            self.paused_since = now
        elif layer != PAUSED:
            self.paused_since = None
        self.layer = layer
        return layer

    def _by_remb(self, meter: LayerMeter, now: float) -> int:
        if self.remb is None or now - self.remb_at > REMB_TTL or meter.cumulative(0) <= 0:
            return TOP
        budget = REMB_TRUST * self.remb
        for layer in range(TOP, 0, -1):
            if meter.cumulative(layer) <= budget:
                return layer
        return 0  # never a pause: while paused, a receiver's REMB only sees the audio

    def _by_loss(self, now: float) -> int:
        layer = self.layer
        if self.loss > LOSS_HIGH:
            self.low_loss_since = None
            if now - self.last_down < STEP_DOWN_EVERY or (layer <= 0 and self.loss <= LOSS_PAUSE):
                return layer
            self.last_down = now
            # the next step needs fresh evidence: a receiver report or a NACK window sent after this one
            self.loss = 0.0
            self.nacked = self.nack_packets = 0
            return PAUSED if layer <= 0 else layer - 1
        if layer == PAUSED:
            since = self.paused_since if self.paused_since is not None else now
            return 0 if now - since >= RETRY_PAUSED_AFTER else PAUSED
        if self.loss < LOSS_LOW:
            if self.low_loss_since is None:
                self.low_loss_since = now
            elif now - self.low_loss_since >= STEP_UP_AFTER and layer < TOP:
                self.low_loss_since = now
                return layer + 1
        else:
            self.low_loss_since = None
        return layer
