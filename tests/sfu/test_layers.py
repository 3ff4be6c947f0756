"""Per-subscriber layer choice from feedback (server.sfu.layers; time is a parameter, nothing sleeps)."""

from __future__ import annotations

import pytest

from server.sfu.layers import (
    NACK_WINDOW,
    RETRY_PAUSED_AFTER,
    SETTLE,
    STEP_DOWN_EVERY,
    STEP_UP_AFTER,
    LayerChooser,
    LayerMeter,
)
from server.sfu.rtp import PAUSED

pytestmark = pytest.mark.sfu


def l1t3_meter() -> LayerMeter:
    """~500 kbps of L1T3: base 250 kbps, +125 kbps, +125 kbps."""
    meter = LayerMeter()
    meter.tick(0.0)
    meter.add(0, 250_000 // 8)
    meter.add(1, 125_000 // 8)
    meter.add(2, 125_000 // 8)
    meter.tick(1.0)
    assert meter.rates[:3] == [250_000, 125_000, 125_000]
    return meter


@pytest.mark.parametrize(("remb", "layer"), [(1_000_000, 2), (170_000, 2), (150_000, 1), (100_000, 0),
                                             (50_000, 0), (1_000, 0)])
def test_a_remb_far_below_the_stream_caps_the_layer(remb: int, layer: int) -> None:
    chooser = LayerChooser()
    chooser.on_remb(remb, now=10.0)
    assert chooser.decide(l1t3_meter(), now=10.0) == layer


def test_an_old_remb_no_longer_limits() -> None:
    chooser = LayerChooser()
    chooser.on_remb(100_000, now=0.0)
    assert chooser.decide(l1t3_meter(), now=1.0) == 0
    assert chooser.decide(l1t3_meter(), now=5.0) == 0  # expired; loss-free climbing goes one step at a time
    assert chooser.decide(l1t3_meter(), now=10.0) == 1


def test_loss_steps_down_one_layer_at_a_time_then_pauses_and_retries() -> None:
    chooser, meter = LayerChooser(), l1t3_meter()
    t = 0.0
    layers = []
    for _ in range(4):
        chooser.on_loss(64)  # 25 % lost, in every report
        layers.append(chooser.decide(meter, t))
        chooser.on_loss(64)
        layers.append(chooser.decide(meter, t + STEP_DOWN_EVERY / 2))  # too soon for another step
        t += STEP_DOWN_EVERY
    assert layers == [1, 1, 0, 0, PAUSED, PAUSED, PAUSED, PAUSED]
    chooser.on_loss(0)  # nothing lost while paused (nothing sent)
    assert chooser.decide(meter, t) == PAUSED
    assert chooser.decide(meter, t + RETRY_PAUSED_AFTER) == 0


def test_a_clean_link_climbs_back_one_layer_per_interval() -> None:
    chooser, meter = LayerChooser(layer=0), l1t3_meter()
    chooser.on_loss(0)
    assert chooser.decide(meter, 0.0) == 0
    assert chooser.decide(meter, STEP_UP_AFTER - 0.1) == 0
    assert chooser.decide(meter, STEP_UP_AFTER) == 1
    assert chooser.decide(meter, 2 * STEP_UP_AFTER) == 2
    assert chooser.decide(meter, 3 * STEP_UP_AFTER) == 2


def test_nacks_count_as_loss() -> None:
    chooser, meter = LayerChooser(), l1t3_meter()
    chooser.on_nack(list(range(30)))
    assert chooser.decide(meter, 0.0, packets=100) == 1


def test_a_few_packets_make_no_loss_rate() -> None:
    """2 NACKed of 12 sent is noise (3 % random loss does that often), not 17 % loss: NACKs make a rate over
    NACK_WINDOW packets."""
    chooser, meter = LayerChooser(), l1t3_meter()
    chooser.on_nack([1, 2])
    assert chooser.decide(meter, 0.0, packets=12) == 2
    assert chooser.decide(meter, 0.5, packets=NACK_WINDOW - 12) == 2  # 2 of NACK_WINDOW: 4 %
    chooser.on_nack(list(range(10, 10 + NACK_WINDOW // 4)))
    assert chooser.decide(meter, 1.0, packets=NACK_WINDOW) == 1  # 25 %


def test_one_report_of_loss_makes_one_step_not_two() -> None:
    """The loss that made a step down was measured before it: the next step needs a report sent after it."""
    chooser, meter = LayerChooser(), l1t3_meter()
    chooser.on_loss(100)  # 39 %
    assert chooser.decide(meter, 0.0) == 1
    assert chooser.decide(meter, STEP_DOWN_EVERY) == 1  # no new report
    chooser.on_loss(100)
    assert chooser.decide(meter, 2 * STEP_DOWN_EVERY) == 0


def test_reports_that_describe_what_was_sent_before_a_step_are_ignored() -> None:
    chooser, meter = LayerChooser(), l1t3_meter()
    chooser.on_loss(100, now=0.0)
    assert chooser.decide(meter, 0.0) == 1
    chooser.on_loss(100, now=SETTLE / 2)  # the congestion that made the step, reported after it
    chooser.on_nack(list(range(40)), now=SETTLE / 2)
    assert chooser.decide(meter, STEP_DOWN_EVERY, packets=NACK_WINDOW) == 1
    chooser.on_loss(100, now=STEP_DOWN_EVERY + 0.1)  # still lossy at layer 1
    assert chooser.decide(meter, STEP_DOWN_EVERY + 0.1) == 0


def test_the_base_layer_is_kept_under_moderate_loss_and_paused_under_heavy_loss() -> None:
    chooser, meter = LayerChooser(layer=0), l1t3_meter()
    for n in range(5):
        chooser.on_loss(38)  # 15 %: the SFU repairs it from its buffer; a pause would freeze the picture
        assert chooser.decide(meter, n * STEP_DOWN_EVERY) == 0
    chooser.on_loss(64)  # 25 %
    assert chooser.decide(meter, 5 * STEP_DOWN_EVERY) == PAUSED


def test_a_repeated_nack_counts_each_lost_packet_once() -> None:
    """Receivers NACK every packet still missing again on each new gap (aiortc) or on a timer (browsers): 5 lost
    packets of 100 NACKed 6 times over, into the next interval, are 5 % loss, not 30 % (which stepped down)."""
    chooser, meter = LayerChooser(), l1t3_meter()
    for n in range(1, 7):
        chooser.on_nack([1000 + i for i in range(n)][:5])
    assert chooser.decide(meter, 0.0, packets=100) == 2
    chooser.on_loss(0)
    chooser.on_nack([1000, 1001, 1002, 1003, 1004])  # the same numbers NACKed once more after the decision
    assert chooser.decide(meter, 1.0, packets=100) == 2
    assert chooser.loss < 0.1


def test_a_publisher_without_temporal_layers_has_all_or_nothing() -> None:
    meter = LayerMeter()
    meter.tick(0.0)
    meter.add(0, 500_000 // 8)
    meter.tick(1.0)
    chooser = LayerChooser()
    chooser.on_loss(64)
    assert chooser.decide(meter, 0.0) == PAUSED  # no useless steps through layers that do not exist
    chooser = LayerChooser()
    chooser.on_remb(1_000, 0.0)
    assert chooser.decide(meter, 0.0) == 0  # 0 means everything it sends; a REMB alone never pauses


def test_a_remb_does_not_resume_a_paused_subscriber_the_retry_does() -> None:
    chooser, meter = LayerChooser(layer=0), l1t3_meter()
    chooser.on_loss(64)
    assert chooser.decide(meter, 0.0) == PAUSED
    chooser.on_loss(0)
    chooser.on_remb(2_000_000, now=1.0)
    assert chooser.decide(meter, 1.0) == PAUSED
    assert chooser.decide(meter, RETRY_PAUSED_AFTER) == 0
