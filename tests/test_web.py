"""The web page, driven in headless Chromium (Playwright + Debian's chromium): upload a real EmoDB
clip and read the rendered result; then a long recording and its timeline."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from crabser.data.corpora import emodb as emodb_adapter

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get(
        "CRABSER_REQUIRE_BROWSER"
    ):  # set by .ci/run, which installs Debian's chromium
        raise RuntimeError("CRABSER_REQUIRE_BROWSER is set but no chromium is on PATH")
    pytest.skip(
        "no chromium on PATH: `apt-get install chromium` (CI installs it)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def server():
    import uvicorn

    from crabser.serve import ServiceSettings, create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(ServiceSettings()), host="127.0.0.1", port=port, log_level="warning"
    )
    service = uvicorn.Server(config)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    for _ in range(200):
        if service.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    service.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        fake_microphone = [
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
        ]  # a beeping test source
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", *fake_microphone]
        )
        yield browser.new_page(viewport={"width": 1000, "height": 900})
        browser.close()


@pytest.fixture(scope="module")
def speaker16(emodb):
    frame = emodb_adapter.prepare(emodb).frame
    return frame[frame["speaker"] == "16"]


def test_upload_shows_the_label_and_a_bar_per_class(server, page, speaker16, tmp_path_factory):
    from crabser.inference import Recognizer

    row = speaker16[speaker16["label"] == "anger"].iloc[0]
    expected = Recognizer.load().predict(row["audio"])
    page.goto(server)
    page.wait_for_function("document.getElementById('labels').textContent.includes(',')")
    page.set_input_files("#file", row["audio"])
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert page.inner_text("#label") == expected.label
    rows = page.query_selector_all("#bars .row")
    assert len(rows) == len(expected.probabilities)  # one bar per class of the model
    shown = {
        r.get_attribute("data-label"): float(r.inner_text().split()[-1].rstrip("%")) for r in rows
    }
    for label, p in expected.probabilities.items():
        assert shown[label] == pytest.approx(100 * p, abs=0.06)
    assert page.query_selector("#bars .row.top").get_attribute("data-label") == expected.label
    folder = os.environ.get(
        "CRABSER_SCREENSHOT_DIR"
    )  # keep the picture (docs/web_page.png was made so)
    shot = (Path(folder) if folder else tmp_path_factory.mktemp("web")) / "web_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_a_long_recording_shows_a_timeline(server, page, speaker16, tmp_path):
    pause = np.zeros(16000, dtype=np.float32)
    waves = [sf.read(p, dtype="float32")[0] for p in speaker16["audio"][:5]]
    path = tmp_path / "talk.wav"
    sf.write(path, np.concatenate([x for w in waves for x in (pause, w)]), 16000)
    page.goto(server)
    page.set_input_files("#file", str(path))
    page.check("#segments")
    page.click("#submit")
    page.wait_for_selector("#timeline-result:not([hidden])", timeout=60_000)
    blocks = page.query_selector_all("#timeline .seg")
    assert 4 <= len(blocks) <= 10
    assert len(page.query_selector_all("#segment-table tbody tr")) == len(blocks)


def test_a_bad_upload_shows_the_reason(server, page, tmp_path):
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"this is not audio" * 50)
    page.goto(server)
    page.set_input_files("#file", str(junk))
    page.click("#submit")
    page.wait_for_function(
        "document.getElementById('error').textContent.length > 0", timeout=30_000
    )
    assert page.inner_text("#error").startswith("422: notes.wav: not audio")
    assert page.is_hidden("#result")


def test_recording_from_the_microphone_is_sent_and_answered(server, page):
    """Record (Chromium's fake microphone), stop, predict: the WebM/Opus upload is decoded and
    answered."""
    page.goto(server)
    page.click("#record")
    page.wait_for_timeout(1500)
    page.click("#stop")
    page.wait_for_function(
        "document.getElementById('recorded').textContent.includes('kB')", timeout=10_000
    )
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    from crabser.inference import Recognizer

    assert len(page.query_selector_all("#bars .row")) == len(
        Recognizer.load().labels
    )  # a bar per class
    assert page.inner_text("#error") == ""


def test_live_microphone_draws_a_timeline_as_the_audio_arrives(server, page):
    """Live (Chromium's fake microphone beeps): audio streams over the WebSocket and a block per
    window appears while it plays; Stop live ends it."""
    from crabser.inference import Recognizer

    page.goto(server)
    page.click("#live")
    page.wait_for_function(
        "document.querySelectorAll('#live-track .seg').length >= 2", timeout=30_000
    )
    shown = page.eval_on_selector_all(
        "#live-track .seg", "blocks => blocks.map(b => b.dataset.label)"
    )
    page.click("#live-stop")
    assert set(shown) <= {*Recognizer.load().labels, "silent"}, shown
    assert page.inner_text("#error") == ""
    assert page.inner_text("#live-label").split()[0] in {*Recognizer.load().labels, "silent"}
    page.wait_for_function("!document.getElementById('live').disabled")
