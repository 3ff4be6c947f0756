"""A fake camera with a known foreground, for Chromium's ``--use-file-for-fake-video-capture``.

Chromium's own fake camera shows a moving pattern with no person in it, so a segmentation model finds nothing.
This writes a Y4M (raw I420) file whose picture is a drawn head and shoulders in the centre in front of a busy,
high-contrast background (coloured bars and a checkerboard, which blurring visibly changes), in pure Python.
The blur tests and ``alcove bench blur`` use it.
"""

from __future__ import annotations

from pathlib import Path

WIDTH, HEIGHT = 640, 480
SKIN = (222, 170, 138)
SKIN_SHADE = (196, 142, 112)
HAIR = (58, 38, 26)
SHIRT = (40, 70, 120)
LIPS = (170, 70, 70)


def _background(x: int, y: int) -> tuple[int, int, int]:
    """Bookshelf-like coloured bars above, a checkerboard floor below: fine detail everywhere."""
    if y < 300:
        bar = (x // 24) % 5
        colours = ((200, 60, 50), (230, 200, 80), (60, 140, 80), (240, 240, 235), (70, 90, 170))
        r, g, b = colours[bar]
        if (y // 12) % 2 and (x // 6) % 2:
            return (r // 3, g // 3, b // 3)
        return (r, g, b)
    return (235, 235, 235) if ((x // 16) + (y // 16)) % 2 else (30, 30, 30)


def _inside_ellipse(x: float, y: float, cx: float, cy: float, rx: float, ry: float) -> float:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2


def _person(x: int, y: int) -> tuple[int, int, int] | None:
    """A head and shoulders centred in the frame, or None where the background shows."""
    cx, head_cy, rx, ry = WIDTH / 2, 200.0, 70.0, 90.0
    # shoulders and torso: a wide rounded shape from y=330 to the bottom
    if y >= 330:
        half = 90 + min(170.0, (y - 330) * 1.6)
        top = _inside_ellipse(x, y, cx, 400, 220, 80)
        if abs(x - cx) <= half and (y >= 400 or top <= 1):
            return SHIRT if abs(x - cx) > 26 or y > 360 else SKIN_SHADE
    # neck
    if 270 <= y < 345 and abs(x - cx) <= 34:
        return SKIN_SHADE
    d = _inside_ellipse(x, y, cx, head_cy, rx, ry)
    if d <= 1:
        # hair on top and the sides
        if y < head_cy - 45 or (y < head_cy + 10 and abs(x - cx) > rx - 14):
            return HAIR
        # eyes, brows, nose, mouth
        for ex in (cx - 28, cx + 28):
            if _inside_ellipse(x, y, ex, head_cy - 10, 13, 7) <= 1:
                return (30, 30, 30) if _inside_ellipse(x, y, ex, head_cy - 10, 5, 5) <= 1 else (245, 245, 245)
            if abs(y - (head_cy - 27)) <= 3 and abs(x - ex) <= 15:
                return HAIR
        if abs(x - cx) <= 6 and head_cy <= y <= head_cy + 30:
            return SKIN_SHADE
        if _inside_ellipse(x, y, cx, head_cy + 48, 24, 8) <= 1:
            return LIPS
        shade = max(0.0, min(1.0, (d - 0.6) / 0.4))
        return tuple(round(a + (b - a) * shade) for a, b in zip(SKIN, SKIN_SHADE, strict=True))  # type: ignore[return-value]
    # ears
    for ex in (cx - rx, cx + rx):
        if _inside_ellipse(x, y, ex, head_cy + 5, 12, 22) <= 1:
            return SKIN_SHADE
    return None


def rgb(x: int, y: int) -> tuple[int, int, int]:
    """The colour of one pixel of the picture."""
    return _person(x, y) or _background(x, y)


def foreground(x: int, y: int) -> bool:
    """True where the drawn person is (tests compare the centre and the background with this)."""
    return _person(x, y) is not None


def _yuv(r: int, g: int, b: int) -> tuple[int, int, int]:
    """BT.601 limited range, as Chromium's Y4M reader expects."""
    y = 16 + (65.738 * r + 129.057 * g + 25.064 * b) / 256
    u = 128 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256
    v = 128 + (112.439 * r - 94.154 * g - 18.285 * b) / 256
    return (max(0, min(255, round(y))), max(0, min(255, round(u))), max(0, min(255, round(v))))


def write_y4m(path: Path, frames: int = 2, fps: int = 24) -> Path:
    """Writes the picture as a Y4M file (a few identical frames; Chromium loops the file)."""
    ys = bytearray(WIDTH * HEIGHT)
    us = bytearray((WIDTH // 2) * (HEIGHT // 2))
    vs = bytearray((WIDTH // 2) * (HEIGHT // 2))
    usum = [0] * len(us)
    vsum = [0] * len(vs)
    for y in range(HEIGHT):
        row = y * WIDTH
        crow = (y // 2) * (WIDTH // 2)
        for x in range(WIDTH):
            yy, u, v = _yuv(*rgb(x, y))
            ys[row + x] = yy
            usum[crow + x // 2] += u
            vsum[crow + x // 2] += v
    for i in range(len(us)):
        us[i] = usum[i] // 4
        vs[i] = vsum[i] // 4
    frame = b"FRAME\n" + bytes(ys) + bytes(us) + bytes(vs)
    header = f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{fps}:1 Ip A1:1 C420jpeg\n".encode()
    path.write_bytes(header + frame * frames)
    return path

