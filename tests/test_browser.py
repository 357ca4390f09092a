"""What people see, in a real browser: Debian's Chromium driven by Playwright for Python.

- the playground end to end: a command typed in the chat, the card, each person opening their
  link and signing, the signed file back in the chat;
- the signing page at 390×844 (a phone's in-app browser) and 1280×800, screenshots kept under
  `.data/test-artifacts/browser/`; signed with the keyboard alone; signed with JavaScript off;
- every control on the signing page and the playground has a label (axe-core's rules);
- `/docs` and `/redoc` render with no request leaving the machine;
- the Temporal UI with SignBridge's columns, as docs/operations.md shows them.

The browser is `/usr/bin/chromium` from Debian (`.ci/run` installs it); nothing is downloaded by
Playwright's own browser installer. A missing browser fails these tests: it never skips them. The signing page
is being redesigned elsewhere, so only its form fields (`name`, `consent`, `code`), the form that
sends the one-time code (`action` ending in `/code`) and the submit buttons are relied on here. The
codes arrive in the development mailbox (no email or SMS service is configured in the tests), and
the external customer's link too: they are not in the chat.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright
from temporalio.testing import WorkflowEnvironment

from connectors.notify.dev import read_outbox
from signbridge.core.settings import project_dir
from signbridge.pdf.sample import sample_contract
from tests.codes import latest_code
from tests.playground_stack import PlaygroundStack, playground_stack

CHROMIUM = Path("/usr/bin/chromium")
# What a closed network needs: nothing phones home, no QUIC, no GPU, no sandbox (root in CI).
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = project_dir() / ".data" / "test-artifacts" / "browser"
DOCS_SCREENSHOT = project_dir() / "docs" / "images" / "temporal-ui-columns.png"
# Rules of axe-core that say a control has an accessible name (a label).
LABEL_RULES = ["label", "button-name", "select-name", "link-name", "input-button-name", "aria-input-field-name",
               "form-field-multiple-labels"]
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: `apt-get install chromium` (.ci/run does it)")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture(scope="module")
async def stack(dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[
        PlaygroundStack]:
    async with playground_stack(dev_env.client, tmp_path_factory.mktemp("browser") / "data") as stack:
        yield stack


@pytest.fixture(scope="module")
def artifacts() -> Iterator[Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield ARTIFACTS


class Offline:
    """A browser context that may reach this machine only; every other request is refused and kept."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.refused: list[str] = []

    async def route(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            await route.continue_()
        else:
            self.refused.append(route.request.url)
            await route.abort()


@pytest.fixture
async def offline(browser: Browser) -> AsyncIterator[Any]:
    """`await offline(**context options)` → a page; the test fails if anything left the machine."""
    made: list[Offline] = []

    async def new_page(**options: Any) -> Page:
        context = await browser.new_context(**{**DESKTOP, **options})
        guard = Offline(context)
        await context.route("**/*", guard.route)
        made.append(guard)
        return await context.new_page()

    yield new_page
    for guard in made:
        await guard.context.close()
    assert [url for guard in made for url in guard.refused] == []


async def _request(stack: PlaygroundStack, by: str, text: str) -> str:
    """A signing request started in the playground's chat (as the page would); its request id."""
    dropped = (await stack.http.post("/playground/api/files", files={
        "file": ("服务器设备采购合同.pdf", sample_contract("Purchase", pages=2), "application/pdf")})).json()
    said = (await stack.http.post("/playground/api/say", json={"by": by, "text": text, "files": [dropped]})).json()
    assert said["answer"]["status"] == 202, said
    return str(said["answer"]["body"]["request_id"])


async def _link(stack: PlaygroundStack, request_id: str, person: str, chat_sso: bool = False) -> str:
    """The signing link `person` got for `request_id`: opened the way the playground opens it (with
    its single sign-on assertion, `chat_sso`), or as it would be from anywhere else (without)."""
    for _ in range(300):
        for entry in await stack.entries():
            body = entry.get("body", {})
            if body.get("to") == person and body.get("sign_url") and request_id in body.get("idempotency_key", ""):
                opened = await stack.http.get(f"/playground/open/{entry['seq']}", params={"as": person})
                location = str(opened.headers["location"])
                return location if chat_sso else location.split("?sso=", 1)[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no signing link for {person}")


async def _ask_code(page: Page, stack: PlaygroundStack, signer_id: str) -> str:
    """Press "send code" (a plain form post that shows the page again) and read the code where it arrived."""
    async with page.expect_navigation() as navigation:
        await page.locator("form[action$='/code'] button[type=submit]").click()
    response = await navigation.value
    assert response is not None and response.status == 200, await page.content()
    return latest_code(stack.settings, signer_id)


async def _sign(page: Page, name: str, stack: PlaygroundStack, signer_id: str) -> None:
    """Sign as `name`: with the consent alone when the chat's sign-in verified them, else typed,
    with a one-time code where the page asks for one."""
    form = page.locator("form:has(input[name=consent])")
    if await page.locator("#verified").count():
        assert name in await page.locator("#verified").inner_text()
        assert await form.locator("input[name=name]").count() == 0  # nothing to type
    else:
        if await page.locator("form[action$='/code']").count():
            code = await _ask_code(page, stack, signer_id)
            form = page.locator("form:has(input[name=consent])")
            await form.locator("input[name=code]").fill(code)
        await form.locator("input[name=name]").fill(name)
    await form.locator("input[name=consent]").check()
    async with page.expect_navigation() as navigation:
        await form.locator("button[type=submit]").click()
    response = await navigation.value
    assert response is not None and response.status == 200, await page.content()


async def _no_label_missing(page: Page, what: str) -> None:
    results = await Axe().run(page, options={"runOnly": {"type": "rule", "values": LABEL_RULES}})
    assert results.violations_count == 0, f"{what}: {results.generate_report()}"


# ---- the playground -------------------------------------------------------------------------


async def test_the_playground_end_to_end(stack: PlaygroundStack, offline: Any, artifacts: Path,
                                         tmp_path: Path) -> None:
    contract = tmp_path / "服务器设备采购合同.pdf"
    contract.write_bytes(sample_contract("Server purchase", pages=2))
    page: Page = await offline()
    await page.goto(f"{stack.url}/playground?as=u-zhangsan")
    await page.wait_for_selector("body[data-ready=true]")
    await page.set_input_files("#file", str(contract))
    await page.wait_for_selector("#attached li")
    await page.fill("#text", "/sign @李四 @王五 > @客户A")
    await page.click("#send")
    card = page.locator(".card").last
    await card.locator(".card-status", has_text="签署中").wait_for()
    assert await card.locator(".signer").all_inner_texts() == [
        "1. 李四 — 待签署", "1. 王五 — 待签署", "2. 客户A（外部） — 待轮到"]

    for person, name in (("u-lisi", "李四"), ("u-wangwu", "王五")):
        await page.select_option("#as", person)
        link = page.locator("#inbox a.open").last
        await link.wait_for()
        async with page.context.expect_page() as opened:
            await link.click()
        signing = await opened.value
        await signing.wait_for_load_state()
        await _sign(signing, name, stack, person)
        await signing.close()
    # The customer is not in the chat: their link came by email (the development mailbox).
    mailed: list[dict[str, Any]] = []
    for _ in range(300):  # the only request of this module with a customer
        mailed = [e for e in read_outbox(stack.settings)
                  if e["purpose"] == "link" and e["key"].endswith(":link:x-kehu")]
        if mailed:
            break
        await asyncio.sleep(0.1)
    assert mailed, "the customer's link never arrived by email"
    signing = await page.context.new_page()
    await signing.goto(mailed[-1]["params"]["url"])
    await _sign(signing, "客户A", stack, "x-kehu")
    await signing.close()

    await page.select_option("#as", "u-zhangsan")
    await page.locator(".card[data-status=COMPLETED]").wait_for(timeout=60_000)
    download = page.locator("a.download").last
    await download.wait_for()
    signed = await page.request.get(str(await download.get_attribute("href")))
    assert signed.ok and (await signed.body()).startswith(b"%PDF")
    await page.screenshot(path=str(artifacts / "playground-1280x800.png"), full_page=True)
    await _no_label_missing(page, "the playground")


# ---- the signing page -----------------------------------------------------------------------


async def test_the_signing_page_on_a_phone_and_a_desktop(stack: PlaygroundStack, offline: Any,
                                                         artifacts: Path) -> None:
    request_id = await _request(stack, "u-zhangsan", "/sign @赵六")
    url = await _link(stack, request_id, "u-zhaoliu")
    for size, options in (("390x844", PHONE), ("1280x800", DESKTOP)):
        page: Page = await offline(**options)
        response = await page.goto(url)
        assert response is not None and response.status == 200
        await page.screenshot(path=str(artifacts / f"signing-page-{size}.png"), full_page=True)
        width = options["viewport"]["width"]
        assert await page.evaluate("document.documentElement.scrollWidth") <= width  # nothing wider than the screen
        await _no_label_missing(page, f"the signing page at {size}")
    await _sign(page, "赵六", stack, "u-zhaoliu")


async def test_the_first_screen_on_a_phone(stack: PlaygroundStack, offline: Any, artifacts: Path) -> None:
    """390×844 at 3× pixels: who asks, what and by when fill the first screen; hashes wait under
    "文件详情"; the page image is sharp at twice its size; the name field is empty, its hint visible."""
    request_id = await _request(stack, "u-zhangsan", "/sign @王五 @赵六")
    url = await _link(stack, request_id, "u-wangwu")
    page: Page = await offline(**PHONE)
    assert (await page.goto(url)) is not None
    ask = page.locator("h1")
    view = (await stack.http.get(url.split("?")[0], headers={"Accept": "application/json"})).json()
    assert await ask.inner_text() == f"张三 请您签署《服务器设备采购合同》，截止 {view['deadline_words']['zh']}"
    box = await ask.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 844 / 2  # in the top half of the first screen
    assert await page.get_by_text("SHA-256").first.is_hidden()  # under the closed disclosure
    await page.locator("summary", has_text="文件详情").click()
    assert await page.get_by_text("SHA-256").first.is_visible()
    image = page.locator("figure img").first
    await image.scroll_into_view_if_needed()
    await page.wait_for_function("document.querySelector('figure img').complete")
    chosen, shown = await image.evaluate("img => [img.currentSrc, img.getBoundingClientRect().width]")
    pixels = (await page.request.get(chosen)).body()
    width = int.from_bytes((await pixels)[16:20], "big")  # the PNG's IHDR width
    assert chosen.endswith("@3x.png") and width >= shown * 3 * 2, (chosen, width, shown)  # 3× screen, 2× zoom
    description = await image.get_attribute("aria-describedby")
    assert description and "Purchase" in await page.locator(f"#{description}").inner_text()
    name = page.locator("input[name=name]")
    assert await name.input_value() == "" and await page.locator("#name-hint").is_visible()
    assert "王五" in await page.locator("#name-hint").inner_text()
    await page.screenshot(path=str(artifacts / "signing-page-first-screen-390x844.png"))
    await name.fill("王六")
    if await page.locator("input[name=code]").count():  # the browser wants the field filled; the name fails first
        await page.locator("input[name=code]").fill("000000")
    await page.locator("input[name=consent]").check()
    async with page.expect_navigation():
        await page.locator("form:has(input[name=name]) button[type=submit]").click()
    assert await name.input_value() == "王六" and await page.locator("[role=alert]").is_visible()
    await _sign(page, "王五", stack, "u-wangwu")
    assert await page.locator("a", has_text="下载已签文件").count() == 0  # 赵六 has not signed yet


async def test_one_tap_signing_with_the_chats_sign_in(stack: PlaygroundStack, offline: Any, artifacts: Path) -> None:
    """The playground opens 李四's link with its signed `sso` assertion, as a company chat's in-app
    browser would: verified, no name to type, one tap; the assertion works once."""
    request_id = await _request(stack, "u-zhangsan", "/sign @李四")
    url = await _link(stack, request_id, "u-lisi", chat_sso=True)
    page: Page = await offline(**PHONE)
    response = await page.goto(url)
    assert response is not None and response.status == 200
    assert page.url == url.split("?sso=", 1)[0]  # the assertion is gone from the address bar
    assert (await page.locator("#verified").inner_text()).split() == [
        "已通过公司聊天工具身份验证：李四", "Verified", "by", "your", "company", "chat:", "李四"]
    assert await page.locator("input[name=name]").count() == 0
    await page.screenshot(path=str(artifacts / "signing-page-one-tap-390x844.png"))
    await _no_label_missing(page, "the one-tap signing page")
    await _sign(page, "李四", stack, "u-lisi")
    assert "下载已签文件" in await page.content()  # the only signer: complete

    again: Page = await offline(**PHONE)
    reused = await again.goto(url)
    assert reused is not None and reused.status in (403, 410)  # used once; and the link is signed by now


async def test_signing_with_the_keyboard_alone(stack: PlaygroundStack, offline: Any) -> None:
    request_id = await _request(stack, "u-zhangsan", "/sign @王五")
    page: Page = await offline()
    await page.goto(await _link(stack, request_id, "u-wangwu"))

    async def tab_to(selector: str) -> None:
        for _ in range(40):
            await page.keyboard.press("Tab")
            if await page.evaluate(f"document.activeElement.matches({selector!r})"):
                return
        raise AssertionError(f"Tab never reaches {selector}")

    await tab_to("form[action$='/code'] button[type=submit]")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")  # "send code"
    await tab_to("input[name=name]")
    await page.keyboard.type("王五")
    await tab_to("input[name=code]")
    await page.keyboard.type(latest_code(stack.settings, "u-wangwu"))
    await tab_to("input[name=consent]")
    await page.keyboard.press("Space")
    await tab_to("form:has(input[name=consent]) button[type=submit]")
    async with page.expect_navigation() as navigation:
        await page.keyboard.press("Enter")
    response = await navigation.value
    assert response is not None and response.status == 200, await page.content()


async def test_signing_with_javascript_off(stack: PlaygroundStack, offline: Any) -> None:
    request_id = await _request(stack, "u-zhangsan", "/sign @李四")
    page: Page = await offline(java_script_enabled=False)
    await page.goto(await _link(stack, request_id, "u-lisi"))
    await _sign(page, "李四", stack, "u-lisi")  # plain form posts: the page needs no script


# ---- API docs and the Temporal UI ------------------------------------------------------------


async def test_api_docs_render_offline(stack: PlaygroundStack, offline: Any) -> None:
    page: Page = await offline()
    await page.goto(f"{stack.url}/docs")
    webhook = page.locator(".opblock-summary-path[data-path='/im/webhook/events']")
    await webhook.wait_for()
    assert await page.locator(".opblock").count() > 15
    await webhook.click()
    await page.get_by_text('"/sign @李四 @王五 > @客户A"').first.wait_for()  # the example body, ready to send

    await page.goto(f"{stack.url}/redoc")
    await page.locator("h2", has_text="Webhook IM: a chat message, a card button or an approval").wait_for()


async def test_the_temporal_ui_with_signbridge_columns(stack: PlaygroundStack, offline: Any, artifacts: Path,
                                                       dev_ui_port: int) -> None:
    """The clicks docs/operations.md describes; `SIGNBRIDGE_UPDATE_DOCS_SCREENSHOTS=1` refreshes its picture."""
    request_id = await _request(stack, "u-zhangsan", "/sign @李四 > @客户A")
    await _link(stack, request_id, "u-lisi")  # waiting for 李四: IN_PROGRESS with a pending signer
    page: Page = await offline(viewport={"width": 1680, "height": 640})
    query = "WorkflowType = 'SigningWorkflow' AND SignInitiator = 'u-zhangsan'"
    await page.goto(f"http://127.0.0.1:{dev_ui_port}/namespaces/default/workflows?query={query}")
    await page.click("[data-testid=workflows-summary-table-configuration-button]")
    for column in ("Run ID", "Type", "End"):
        await page.click(f'button[aria-label="Remove {column} column"]')
    for column in ("SignStatus", "PendingSigners", "SignInitiator"):
        await page.click(f'button[aria-label="Add {column} column"]')
    await page.click("[data-testid=drawer-close-button]")
    await page.get_by_text("Configure Workflows Table").wait_for(state="hidden")
    row = page.locator("tr", has_text=request_id)
    await row.wait_for()
    await row.get_by_text("IN_PROGRESS").wait_for()
    await row.get_by_text("u-lisi").wait_for()
    shot = artifacts / "temporal-ui-columns.png"
    await page.screenshot(path=str(shot))
    if os.environ.get("SIGNBRIDGE_UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)
