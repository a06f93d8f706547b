"""The web page at `/` in a real headless Chromium: enter a key, submit, watch progress and the
image forming (its task's event stream), see the images, cancel a task, copy a task as code (and
run that code), open the gallery; and that event stream read as any client would. Screenshots
are saved under var/artifacts/screenshots/ (`browser` and `shot` in tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import shot
from tests.contract.conftest import OTHER_KEY, PAGE_KEY


def until(browser, condition, timeout_s: float = 60):
    return WebDriverWait(browser, timeout_s, poll_frequency=0.05).until(lambda driver: condition())


def card(browser, status: str | None = None):
    """The newest task card (optionally once it shows `status`)."""
    cards = browser.find_elements(By.CSS_SELECTOR, "#tasks .task")
    if not cards or (status and cards[0].get_attribute("data-status") != status):
        return None
    return cards[0]


def submit(browser, prompt: str, seed: int) -> None:
    Select(browser.find_element(By.ID, "model")).select_by_value("sim-steps")
    Select(browser.find_element(By.ID, "size")).select_by_value("768*512")
    for field, value in (("prompt", prompt), ("seed", str(seed)), ("steps", "20")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "submit").click()


def test_page_renders_cancels_copies_and_lists(browser, service):
    browser.get(f"{service.url}/")
    browser.find_element(By.ID, "api-key").send_keys(PAGE_KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    until(browser, lambda: browser.find_element(By.ID, "app").is_displayed())
    assert not browser.find_element(By.ID, "key-form").is_displayed()
    models = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "model")).options]
    assert "sim-steps" in models and "flux-kontext" not in models  # edit models need an image: not here

    # Submit: the card shows progress (SIMULATED GPU, 20 steps of 0.1 s), then the images.
    submit(browser, "a lighthouse at dusk", seed=7)
    running = until(browser, lambda: (c := card(browser, "RUNNING")) and "step" in c.find_element(
        By.CLASS_NAME, "steps").text and c)
    assert "of 20" in running.find_element(By.CLASS_NAME, "steps").text
    assert "s left" in running.find_element(By.CLASS_NAME, "eta").text
    shot(browser, "page-progress.png")
    done = until(browser, lambda: card(browser, "SUCCEEDED"))
    first_id = done.get_attribute("data-task-id")
    until(browser, lambda: browser.execute_script(
        "const i = document.querySelector('#tasks .task .images img'); return i && i.complete && i.naturalWidth > 0"))
    assert done.find_element(By.TAG_NAME, "figcaption").text == "seed 7"
    assert "768*512" in done.find_element(By.CLASS_NAME, "params").text
    shot(browser, "page-images.png")

    # Copy as code (OpenAI SDK), then run what was copied: it renders with the same parameters.
    Select(done.find_element(By.CLASS_NAME, "code-kind")).select_by_value("openai")
    done.find_element(By.CLASS_NAME, "copy").click()
    code = done.find_element(By.CLASS_NAME, "code").text
    assert "client.images.generate" in code and '"seed":7' in code
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RAYDIANT_API_KEY": PAGE_KEY})
    assert ran.returncode == 0 and "/files/tasks/" in ran.stdout, ran.stderr

    # Cancel a running task from its card.
    submit(browser, "a storm that never ends", seed=8)
    doomed = until(browser, lambda: card(browser, "RUNNING"))
    doomed_id = doomed.get_attribute("data-task-id")
    doomed.find_element(By.CLASS_NAME, "cancel").click()
    until(browser, lambda: card(browser, "CANCELED"))
    assert not doomed.find_element(By.CLASS_NAME, "cancel").is_displayed()

    # The gallery after a reload: the key is still in this tab's session, and the key's tasks are
    # listed newest first: the canceled one, the one the copied code made, the first one.
    browser.refresh()
    until(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#tasks .task")) >= 3)
    listed = [(c.get_attribute("data-task-id"), c.get_attribute("data-status"))
              for c in browser.find_elements(By.CSS_SELECTOR, "#tasks .task")]
    assert [status for _, status in listed[:3]] == ["CANCELED", "SUCCEEDED", "SUCCEEDED"], listed
    assert listed[0][0] == doomed_id and listed[2][0] == first_id, listed
    until(browser, lambda: browser.execute_script(
        "return [...document.querySelectorAll('#tasks .images img')].every(i => i.complete && i.naturalWidth > 0)"))
    shot(browser, "page-gallery.png")


def test_the_page_repaints_where_painted_and_shows_the_image_forming(browser, service, tmp_path):
    """Upload an image, paint over its middle, render: the card shows a preview while it renders
    (a screenshot), and the result keeps the input's pixels away from the painted stroke."""
    import base64
    import io

    import httpx
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains

    source = np.random.default_rng(3).integers(0, 256, (512, 768, 3), dtype=np.uint8)
    Image.fromarray(source).save(tmp_path / "input.png")
    browser.get(f"{service.url}/")
    if not browser.find_element(By.ID, "app").is_displayed():
        browser.find_element(By.ID, "api-key").send_keys(PAGE_KEY)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        until(browser, lambda: browser.find_element(By.ID, "app").is_displayed())
    Select(browser.find_element(By.ID, "model")).select_by_value("flux-dev")
    Select(browser.find_element(By.ID, "size")).select_by_value("768*512")
    for field, value in (("prompt", "a red door"), ("seed", "5"), ("steps", "60")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "init-image").send_keys(str(tmp_path / "input.png"))
    mask = until(browser, lambda: (m := browser.find_element(By.ID, "mask-canvas")).is_displayed() and m)
    ActionChains(browser).move_to_element(mask).click_and_hold().move_by_offset(20, 0).release().perform()
    painted = browser.execute_script("return maskDataUrl()")  # what the page sends: white repaints
    repaint = np.asarray(Image.open(io.BytesIO(base64.b64decode(painted.split(",", 1)[1]))).convert("L")) >= 128
    assert 0 < repaint.mean() < 0.2  # a stroke, not the whole image
    browser.find_element(By.ID, "submit").click()
    preview = until(browser, lambda: (c := card(browser, "RUNNING")) and (p := c.find_element(
        By.CLASS_NAME, "preview")).is_displayed() and browser.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", p) and p)
    assert preview.get_attribute("src").startswith("data:image/png;base64,")  # pushed on the task's stream
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", preview)
    shot(browser, "page-preview.png")
    done = until(browser, lambda: card(browser, "SUCCEEDED"), timeout_s=120)
    assert "repainted where masked" in done.find_element(By.CLASS_NAME, "params").text
    url = until(browser, lambda: done.find_element(By.CSS_SELECTOR, ".images img").get_attribute("src"))
    result = np.asarray(Image.open(io.BytesIO(httpx.get(url, timeout=30).content)).convert("RGB"))
    # Every pixel outside the painted stroke is the input's, exactly; inside, it was repainted.
    assert np.array_equal(result[~repaint], source[~repaint])
    assert not np.array_equal(result[repaint], source[repaint])
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", done)
    shot(browser, "page-inpaint.png")


def test_a_wrong_key_is_refused_on_the_page(browser, service):
    browser.get(f"{service.url}/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    browser.find_element(By.ID, "api-key").send_keys("not-a-key")
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    error = until(browser, lambda: browser.find_element(By.ID, "key-error").text)
    assert "401" in error and not browser.find_element(By.ID, "app").is_displayed()


def test_a_task_event_stream_gives_its_views_and_previews_until_it_ends(service, base_url):
    import json

    import httpx

    headers = {"Authorization": f"Bearer {PAGE_KEY}"}
    created = httpx.post(f"{base_url}/services/aigc/text2image/image-synthesis", timeout=60,
                         headers=headers | {"X-DashScope-Async": "enable"},
                         json={"model": "flux-dev", "input": {"prompt": "a kite"},
                               "parameters": {"size": "768*512", "steps": 12, "partial_images": 2}}).json()
    task_id = created["output"]["task_id"]
    events = []
    with httpx.stream("GET", f"{service.url}/web/api/tasks/{task_id}/events", headers=headers, timeout=120) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
    kinds = [event["type"] for event in events]
    assert kinds[0] == "task" and events[-1] == {"type": "task", "task": events[-1]["task"]}
    assert events[-1]["task"]["status"] == "SUCCEEDED" and events[-1]["task"]["images"][0]["url"]
    previews = [event for event in events if event["type"] == "preview"]
    assert sorted(p["partial_image_index"] for p in previews) == [0, 1]  # each once
    assert all(p["data_url"].startswith("data:image/png;base64,") for p in previews)
    assert kinds.index("preview") < len(kinds) - 1  # before the end
    other = httpx.get(f"{service.url}/web/api/tasks/{task_id}/events", timeout=30,
                      headers={"Authorization": f"Bearer {OTHER_KEY}"})  # another key's task: not there for it
    assert (other.status_code, other.json()["code"]) == (404, "InvalidParameter") and task_id in other.json()["message"]
