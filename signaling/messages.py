"""The wire schema, defined once: client→server and server→client messages (protocol version 1).

Every message is a JSON object with a ``type`` tag. Decoding is strict: unknown types and unknown, missing or
ill-typed fields are refused with a typed error and change nothing. See docs/protocol.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

from .errors import SignalingError

PROTOCOL_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 64 * 1024
SFU_PID: Final = "sfu"
"""The pseudo-pid of the room's SFU: ``to``/``from`` of the relay messages exchanged with it."""

Pid = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Ticket = Annotated[str, Meta(min_length=1, max_length=256)]
Opaque8k = Annotated[str, Meta(max_length=8192)]
Sdp = Annotated[str, Meta(min_length=1, max_length=60_000)]
Sig = Annotated[str, Meta(max_length=8192)]
CandidateText = Annotated[str, Meta(max_length=1024)]
Role = Literal["therapist", "client"]
Status = Literal["waiting", "admitted"]
TherapistStatus = Literal["present", "reconnecting", "stepped-out", "absent"]
SessionType = Literal["individual", "couple", "family", "group"]
Topology = Literal["mesh", "sfu"]
CheckResult = Literal["direct", "relay", "blocked"]
VideoState = Literal["on", "paused"]
Quality = Literal["good", "weak", "reconnecting"]
"""The outcome of the join page's connection test, as the client reports it (a hint)."""


class _In(Struct, tag_field="type", forbid_unknown_fields=True):
    """Base of client→server messages."""


class _Out(Struct, tag_field="type"):
    """Base of server→client messages."""


# ---------------------------------------------------------------- client → server


class Hello(_In, tag="hello"):
    v: int
    ticket: Ticket
    name: Annotated[str, Meta(max_length=512)] | None = None
    resume: Annotated[str, Meta(max_length=4096)] | None = None
    intro: Opaque8k | None = None
    check: CheckResult | None = None


class Admit(_In, tag="admit"):
    pid: Pid
    grant: Opaque8k | None = None


class AdmitAll(_In, tag="admit-all"):
    pass


class Decline(_In, tag="decline"):
    pid: Pid
    message: Annotated[str, Meta(max_length=280)] | None = None
    block: bool = False


class SendToWaiting(_In, tag="send-to-waiting"):
    pid: Pid


class Remove(_In, tag="remove"):
    pid: Pid
    message: Annotated[str, Meta(max_length=280)] | None = None
    block: bool = False


class Extend(_In, tag="extend"):
    minutes: Literal[5, 10]


class End(_In, tag="end"):
    pass


class Leave(_In, tag="leave"):
    pass


class Offer(_In, tag="offer"):
    to: Pid
    sdp: Sdp
    sig: Sig | None = None


class Answer(_In, tag="answer"):
    to: Pid
    sdp: Sdp
    sig: Sig | None = None


class Candidate(_In, tag="candidate"):
    to: Pid
    candidate: CandidateText | None
    sdp_mid: Annotated[str, Meta(max_length=64)] | None = None
    sdp_mline_index: Annotated[int, Meta(ge=0, le=64)] | None = None


class Key(_In, tag="key"):
    to: Pid | None
    data: Annotated[str, Meta(min_length=1, max_length=32_768)]


AppData = Annotated[str, Meta(min_length=1, max_length=16_384)]
"""An end-to-end encrypted app message as the sender's page made it: opaque to the server (docs/security.md)."""


class App(_In, tag="app"):
    """An end-to-end encrypted app message (chat, safety, state, …): to everyone (``null``) or to one pid."""

    to: Pid | None
    data: AppData


class MediaState(_In, tag="media-state"):
    """An admitted participant's own link, as it measures it: video paused to keep the sound, quality."""

    video: VideoState
    quality: Quality


ClientMessage = (
    Hello | Admit | AdmitAll | Decline | SendToWaiting | Remove | Extend | End | Leave | Offer | Answer
    | Candidate | Key | App | MediaState
)
CLIENT_TYPES: Final[tuple[str, ...]] = (
    "hello", "admit", "admit-all", "decline", "send-to-waiting", "remove", "extend", "end", "leave",
    "offer", "answer", "candidate", "key", "app", "media-state",
)

# ---------------------------------------------------------------- server → client


class RoomInfo(Struct):
    id: str
    type: SessionType
    opens_at: str
    starts_at: str
    ends_at: str
    seats: int
    topology: Topology


class Welcome(_Out, tag="welcome"):
    v: int
    pid: str
    role: Role
    status: Status
    room: RoomInfo
    therapist: TherapistStatus
    position: int | None
    resume: str


class Waiting(_Out, tag="waiting"):
    position: int
    therapist: TherapistStatus
    reason: Literal["sent-back", "therapist-away"] | None = None


class QueueEntry(Struct):
    pid: str
    name: str
    since: str
    connected: bool
    intro: str | None
    check: CheckResult | None = None


class Queue(_Out, tag="queue"):
    waiting: list[QueueEntry]


class Admitted(_Out, tag="admitted"):
    grant: str | None


class RosterEntry(Struct):
    pid: str
    role: Role
    name: str
    connected: bool


class Roster(_Out, tag="roster"):
    participants: list[RosterEntry]


class IceServers(_Out, tag="ice-servers"):
    ice_servers: list[dict[str, Any]]
    expires_at: str | None


class Therapist(_Out, tag="therapist"):
    status: TherapistStatus


class Declined(_Out, tag="declined"):
    message: str | None
    blocked: bool = False


class Removed(_Out, tag="removed"):
    message: str | None = None
    blocked: bool = False


class Time(_Out, tag="time"):
    ends_at: str
    extended_minutes: int
    overrun_left_minutes: int


class Warning(_Out, tag="warning"):
    minutes: int
    ends_at: str


class SessionEnded(_Out, tag="session-ended"):
    reason: Literal["time", "therapist", "admin"]


class Resume(_Out, tag="resume"):
    credential: str


class PeerOffer(_Out, tag="offer"):
    from_: str = msgspec.field(name="from")
    sdp: str = ""
    sig: str | None = None


class PeerAnswer(_Out, tag="answer"):
    from_: str = msgspec.field(name="from")
    sdp: str = ""
    sig: str | None = None


class PeerCandidate(_Out, tag="candidate"):
    from_: str = msgspec.field(name="from")
    candidate: str | None = None
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


class PeerKey(_Out, tag="key"):
    from_: str = msgspec.field(name="from")
    data: str = ""


class PeerApp(_Out, tag="app"):
    """An app message relayed untouched from an admitted participant (the server never reads ``data``)."""

    from_: str = msgspec.field(name="from")
    data: str = ""


class TrackRef(Struct, omit_defaults=True):
    pid: str
    kind: Literal["audio", "video"]
    paused: bool = False
    """The SFU stopped this video to the receiver: its link cannot carry even the lowest layer (the sound goes
    on); it resumes by itself."""


class Tracks(_Out, tag="tracks"):
    """SFU rooms: which of the receiver's own recvonly m-lines (by mid) carries whose media."""

    from_: str = msgspec.field(name="from")
    mids: dict[str, TrackRef] = msgspec.field(default_factory=dict)


class MediaEnded(_Out, tag="media-ended"):
    """SFU rooms: the media server of this session stopped; build a new connection to the SFU."""

    from_: str = msgspec.field(name="from")
    reason: Literal["sfu-failure"] = "sfu-failure"


class PeerMediaState(_Out, tag="media-state"):
    """A participant's own report of its link (``media-state`` relayed to the other admitted participants)."""

    from_: str = msgspec.field(name="from")
    video: VideoState = "on"
    quality: Quality = "good"


class Error(_Out, tag="error"):
    code: str
    message: str
    ref: str | None = None


ServerMessage = (
    Welcome | Waiting | Queue | Admitted | Roster | IceServers | Therapist | Declined | Removed | Time | Warning
    | SessionEnded | Resume | PeerOffer | PeerAnswer | PeerCandidate | PeerKey | PeerApp | Tracks | MediaEnded | PeerMediaState
    | Error
)
SERVER_TYPES: Final[tuple[str, ...]] = (
    "welcome", "waiting", "queue", "admitted", "roster", "ice-servers", "therapist", "declined", "removed",
    "time", "warning", "session-ended", "resume", "offer", "answer", "candidate", "key", "app", "tracks", "media-ended",
    "media-state", "error",
)

_decoder: Final = msgspec.json.Decoder(ClientMessage)
_server_decoder: Final = msgspec.json.Decoder(ServerMessage)
_encoder: Final = msgspec.json.Encoder()


def decode_client(data: bytes | str) -> ClientMessage:
    """Decode and validate one client message, or raise a typed ``SignalingError``."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_MESSAGE_BYTES:
        raise SignalingError("too-large", f"a message has at most {MAX_MESSAGE_BYTES} bytes")
    try:
        msg: ClientMessage = _decoder.decode(raw)
        return msg
    except msgspec.ValidationError as exc:
        raise _classify(raw, exc) from None
    except msgspec.DecodeError:
        raise SignalingError("bad-json", "the message is not valid JSON") from None


def _classify(raw: bytes, exc: msgspec.ValidationError) -> SignalingError:
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return SignalingError("bad-json", "the message is not valid JSON")
    if not isinstance(obj, dict):
        return SignalingError("bad-json", "a message is a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        return SignalingError("unknown-type", "the type is not a message of this protocol")
    # msgspec's text names the field and the rule; it never quotes the value itself.
    return SignalingError("invalid-message", str(exc), ref=kind)


def encode(message: ServerMessage | ClientMessage) -> bytes:
    return _encoder.encode(message)


def decode_server(data: bytes | str) -> ServerMessage:
    """Used by Python clients (the peer) and tests."""
    msg: ServerMessage = _server_decoder.decode(data)
    return msg


def error_message(err: SignalingError) -> Error:
    return Error(code=err.code, message=err.message, ref=err.ref)


def tag_of(message: ServerMessage | ClientMessage) -> str:
    """The wire ``type`` of a message (its msgspec tag), e.g. ``"welcome"``."""
    return str(type(message).__struct_config__.tag)
