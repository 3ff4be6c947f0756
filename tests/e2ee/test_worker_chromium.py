"""The E2EE media worker (web/static/js/lib/e2ee-worker.js) in Debian's Chromium, driven by Playwright.

Two RTCPeerConnections in one page, each side with its own worker (as two pages would have), keys
installed through e2ee.js KeyState. Run inside the loopback-only namespace:
    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/e2ee'
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import require_chromium
from tools.chromium import launch

pytestmark = [pytest.mark.e2ee, pytest.mark.browser]

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>e2ee worker test</title>
<script type="module">
import { KeyState, loadOrCreateIdentity, pubRaw } from "/static/js/lib/e2ee.js";
import { epochBaseKey } from "/static/js/lib/sframe.js";

const rnd = (n) => crypto.getRandomValues(new Uint8Array(n));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function makeWorker() {
  const w = new Worker("/static/js/lib/e2ee-worker.js", { type: "module" });
  w.lastStats = null;
  w.errors = [];
  w.onmessage = (e) => {
    if (e.data.type === "stats") w.lastStats = e.data;
    else if (e.data.type === "error") w.errors.push(e.data.message);
  };
  w.onerror = (e) => w.errors.push(String(e.message));
  return w;
}

function attach(endpoint, worker, options, legacy) {
  if (legacy) {
    const { readable, writable } = endpoint.createEncodedStreams();
    worker.postMessage({ type: "transform", readable, writable, options }, [readable, writable]);
  } else {
    endpoint.transform = new RTCRtpScriptTransform(worker, options);
  }
}

async function inbound(pc) {
  const out = { framesDecoded: 0, framesReceived: 0, keyFramesDecoded: 0, frameWidth: 0, audioSamples: 0, bytes: 0 };
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      out.framesDecoded = s.framesDecoded ?? 0;
      out.framesReceived = s.framesReceived ?? 0;
      out.keyFramesDecoded = s.keyFramesDecoded ?? 0;
      out.frameWidth = s.frameWidth ?? 0;
      out.bytes = s.bytesReceived ?? 0;
    }
    if (s.type === "inbound-rtp" && s.kind === "audio") out.audioSamples = s.totalSamplesReceived ?? 0;
  });
  return out;
}

window.scenario = async (o) => {
  const room = "r_browser";
  const roster = { p_s: 0, p_r: 1 };
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
  const wS = makeWorker();
  const wR = makeWorker();
  const ksS = new KeyState({ post: (m) => wS.postMessage(m) });
  const ksR = new KeyState({ post: (m) => wR.postMessage(m) });
  const bk = await epochBaseKey(rnd(32), room);
  if (!o.senderNoKey) {
    await ksS.install(1, bk, roster, 0);
    await ksS.switch(1);
  }
  await ksR.install(1, o.wrongKey ? await epochBaseKey(rnd(32), room) : bk, roster, 1);
  await ksR.switch(1);

  const cfg = o.legacy ? { encodedInsertableStreams: true } : {};
  const pcS = new RTCPeerConnection(cfg);
  const pcR = new RTCPeerConnection(cfg);
  pcS.onicecandidate = (e) => e.candidate && pcR.addIceCandidate(e.candidate);
  pcR.onicecandidate = (e) => e.candidate && pcS.addIceCandidate(e.candidate);
  // Both sides create their transceivers with addTrack and attach every transform BEFORE negotiation
  // (so no frame is ever sent or decoded in clear); the answerer's addTrack transceivers are reused by the remote offer.
  for (const track of stream.getTracks()) {
    const sender = pcS.addTrack(track, stream);
    attach(sender, wS, { operation: "encrypt", kind: track.kind }, o.legacy);
  }
  for (const t of pcS.getTransceivers()) {
    if (t.sender.track.kind === "video")
      t.setCodecPreferences(RTCRtpSender.getCapabilities("video").codecs.filter((c) => c.mimeType === "video/VP8"));
  }
  for (const track of stream.getTracks()) pcR.addTrack(track.clone(), stream);
  if (o.receiverTransform !== false) {
    for (const t of pcR.getTransceivers()) {
      const kind = t.receiver.track.kind;
      attach(t.receiver, wR, { operation: "decrypt", kind, peer: "p_s" }, o.legacy);
    }
  }
  const offer = await pcS.createOffer();
  await pcS.setLocalDescription(offer);
  await pcR.setRemoteDescription(offer);
  if (pcR.getTransceivers().length !== 2) throw new Error("answerer transceivers were not reused");
  for (const t of pcR.getTransceivers()) t.direction = "recvonly";
  const answer = await pcR.createAnswer();
  await pcR.setLocalDescription(answer);
  await pcS.setRemoteDescription(answer);
  for (let i = 0; i < 100 && pcR.connectionState !== "connected"; i++) await sleep(100);
  const connected = pcR.connectionState;
  await sleep(o.seconds * 1000);
  const before = await inbound(pcR);
  const out = {};
  (await pcS.getStats()).forEach((s) => {
    if (s.type === "outbound-rtp") out[s.kind] = { framesEncoded: s.framesEncoded, bytesSent: s.bytesSent, packetsSent: s.packetsSent };
  });
  let after = null;
  if (o.switchEpoch) {
    const bk2 = await epochBaseKey(rnd(32), room);
    await ksR.install(2, bk2, roster, 1);
    await ksS.install(2, bk2, roster, 0);
    await ksS.switch(2);
    await ksR.switch(2);
    await sleep(1000);
    ksR.retire(1); // the receiver drops epoch 1: from now on only epoch-2 frames can decode
    ksS.retire(1);
    await sleep(o.seconds * 1000);
    after = await inbound(pcR);
  }
  await sleep(1100); // a fresh stats message from each worker
  const res = {
    connected, before, after, out,  statsS: wS.lastStats, statsR: wR.lastStats, errors: [...wS.errors, ...wR.errors],
  };
  pcS.close();
  pcR.close();
  stream.getTracks().forEach((t) => t.stop());
  wS.terminate();
  wR.terminate();
  return res;
};

window.identityCheck = async () => {
  const a = await loadOrCreateIdentity({ dbName: "alcove-e2ee-test" });
  const b = await loadOrCreateIdentity({ dbName: "alcove-e2ee-test" });
  const ra = await pubRaw(a.publicKey);
  const rb = await pubRaw(b.publicKey);
  return { same: ra.join() === rb.join(), extractable: b.privateKey.extractable, len: ra.length };
};
window.ready = true;
</script>
"""


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    require_chromium()
    from playwright.async_api import async_playwright


    async def index(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/e2ee-test.html", index)
    app.router.add_static("/static/", STATIC)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with async_playwright() as p:
            browser = await launch(p)
            try:
                ctx = await browser.new_context()
                pg = await ctx.new_page()
                errors: list[str] = []
                pg.on("pageerror", lambda e: errors.append(str(e)))
                await pg.goto(f"http://127.0.0.1:{port}/e2ee-test.html")
                await pg.wait_for_function("window.ready === true", timeout=10_000)
                yield pg
                assert not errors, errors
            finally:
                await browser.close()
    finally:
        await runner.cleanup()


async def _run(page: Any, **opts: Any) -> dict[str, Any]:
    opts.setdefault("seconds", 3)
    res: dict[str, Any] = await page.evaluate("o => window.scenario(o)", opts)
    assert res["connected"] == "connected", res
    assert not res["errors"], res["errors"]
    return res


async def test_right_key_decodes(page: Any) -> None:
    res = await _run(page)
    assert res["before"]["framesDecoded"] > 10, res
    assert res["before"]["frameWidth"] > 0, res
    peer = res["statsR"]["peers"]["p_s"]
    assert peer["decrypted"] > 10 and peer["failed"] == 0, res
    assert res["statsS"]["peers"]["self"]["encrypted"] > 10, res


async def test_wrong_key_decodes_nothing(page: Any) -> None:
    res = await _run(page, wrongKey=True)
    assert res["before"]["framesDecoded"] == 0, res
    assert res["before"]["audioSamples"] == 0 or res["statsR"]["peers"]["p_s"]["decrypted"] == 0, res
    peer = res["statsR"]["peers"]["p_s"]
    assert peer["failed"] > 0 and peer["decrypted"] == 0, res


async def test_receiver_without_transform_decodes_nothing_meaningful(page: Any) -> None:
    res = await _run(page, receiverTransform=False)
    assert res["before"]["bytes"] > 0, res  # ciphertext did arrive
    assert res["before"]["framesDecoded"] <= 1, res
    assert res["statsS"]["peers"]["self"]["encrypted"] > 10, res


async def test_sender_without_key_sends_nothing(page: Any) -> None:
    res = await _run(page, senderNoKey=True)
    assert res["before"]["framesDecoded"] == 0, res
    s = res["statsS"]["peers"]["self"]
    assert s["encrypted"] == 0 and s["dropped"] > 0, res


async def test_key_switch_keeps_frames_flowing(page: Any) -> None:
    res = await _run(page, switchEpoch=True)
    before, after = res["before"]["framesDecoded"], res["after"]["framesDecoded"]
    assert before > 10, res
    assert after - before > 10, res  # still decoding after epoch 1 was dropped on the receiver
    assert res["statsS"]["sendEpoch"] == 2 and res["statsR"]["epochs"] == [2], res
    assert res["statsR"]["peers"]["p_s"]["failed"] <= 2, res


async def test_legacy_encoded_streams_right_key(page: Any) -> None:
    res = await _run(page, legacy=True)
    assert res["before"]["framesDecoded"] > 10, res
    assert res["statsR"]["peers"]["p_s"]["failed"] == 0, res


async def test_therapist_identity_persists_non_extractable(page: Any) -> None:
    res = await page.evaluate("() => window.identityCheck()")
    assert res == {"same": True, "extractable": False, "len": 65}
