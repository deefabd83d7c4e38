"""gallery.html in a real headless browser (Debian's chromium and chromedriver, driven
by selenium): it loads from file:// without console errors, every image decodes, audio
and MIDI get players, the filters and the contact sheet's zoom work, and a screenshot is
taken. CI installs chromium (scripts/install-system-packages); without it this test
fails, saying what to install."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from studio.testing import run_yaml

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Chromium's own background connections are refused on a closed network; these keep it quiet
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")

PIPELINE = """
name: looks
description: A little of everything, to look at in a browser.
steps:
  - {id: pic, uses: fake.image, with: {prompt: hi, size: 8}, sweep: {seed: [1, 2]}}
  - {id: sheet, uses: image.grid, with: {images: "${steps.pic.outputs.image}", cell_size: 256}}
  - {id: words, uses: fake.text, with: {prompt: hello}}
  - {id: broken, uses: fake.fail, with: {message: out of ideas}}
  - {id: tune, uses: music.transformer, with: {duration_s: 3, seed: 1}}
  - {id: sound, uses: audio.render, with: {midi: "${steps.tune.outputs.midi}", sample_rate: 16000}}
"""


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists() and not shutil.which(Path(p).name)]
    assert not missing, (f"{', '.join(missing)} missing: apt-get install chromium chromium-driver "
                         "(scripts/install-system-packages does it as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_gallery_works_in_a_real_browser(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    result = run_yaml(PIPELINE, tmp_path)
    assert result.status == "failed"  # the one broken item; everything else is made
    gallery = result.run_dir / "gallery.html"
    browser.get(gallery.as_uri())
    assert browser.title == "looks"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    decoded = browser.execute_script(
        "return [...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0])")
    assert decoded and all(ok for _, ok in decoded), decoded
    assert {alt for alt, _ in decoded} >= {"piano roll", "waveform"}
    players = browser.find_elements(By.TAG_NAME, "audio")
    assert len(players) == 2  # the rendered WAV, and the same under the MIDI that made it
    assert "A little of everything" in browser.find_element(By.TAG_NAME, "body").text
    assert "out of ideas" in browser.find_element(By.CSS_SELECTOR, '[data-step="broken"]').text

    sheet = browser.find_element(By.CSS_SELECTOR, "img.sheet")
    narrow = sheet.size["width"]
    sheet.click()
    assert "zoomed" in sheet.get_attribute("class") and sheet.size["width"] >= narrow

    Select(browser.find_element(By.ID, "status")).select_by_visible_text("failed")
    shown = [e for e in browser.find_elements(By.CSS_SELECTOR, ".item") if e.is_displayed()]
    assert [e.get_attribute("data-step") for e in shown] == ["broken"]
    Select(browser.find_element(By.ID, "status")).select_by_visible_text("all")
    Select(browser.find_element(By.ID, "step")).select_by_visible_text("pic")
    shown = [e for e in browser.find_elements(By.CSS_SELECTOR, ".item") if e.is_displayed()]
    assert [e.get_attribute("data-step") for e in shown] == ["pic", "pic"]
    assert "seed 1" in shown[0].text and "prompt" in shown[0].text

    screenshot = tmp_path / "gallery.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
