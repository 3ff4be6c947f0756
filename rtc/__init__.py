"""WebRTC plumbing shared by the forwarding SFU (``server/sfu``) and the Python participant (``peer/``).

The second floor of the house: it may import the core (``signaling/``) and libraries, never ``server``,
``peer`` or ``tools``.

* :mod:`rtc.aiortc_hooks` — the one module that touches aiortc internals (encoded-frame transforms,
  pass-through receivers, keyframe requests).
* :mod:`rtc.ice` — an explicit aiortc ``RTCConfiguration`` from RTCIceServer-shaped dicts.
* :mod:`rtc.urls` — STUN/TURN URL order and SDP candidate types, as text (no aiortc: the server uses it).
* :mod:`rtc.codecs` — the codec preference (VP8 and Opus only: what E2EE can protect).
"""
