"""Debian's Chromium, headless, driven by Selenium through Debian's chromedriver.

Selenium's calls block, and the stack under test runs on the test's own event loop, so
every call goes through a thread (`asyncio.to_thread`): the gateway answers the browser
while the test waits for it.
"""

from __future__ import annotations

import asyncio
import shutil
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from waiting import until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["CHROMEDRIVER", "CONSOLE_MARKS", "XSS", "Browser", "browser", "token_file"]

CHROMEDRIVER: Final = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# every console test module's marks: skipped without the driver, bounded when hung
CONSOLE_MARKS: Final = [
    pytest.mark.skipif(
        not Path(CHROMEDRIVER).exists(),
        reason="chromium-driver missing: `just chromium` installs Debian's",
    ),
    pytest.mark.timeout(120),
]
XSS: Final = "<img src=x onerror=alert(1)>"  # markup the page must show as text, never run


def token_file(folder: Path, admin: str, reader: str) -> str:
    """A gateway's token file: an admin named alice and a reader, both over every service."""
    tokens = folder / "tokens"
    tokens.write_text(f"{admin} admin * name=alice\n{reader} reader *\n")
    return str(tokens)


WAIT_S: Final = 15.0  # a bound for a hung page, not a measure: conditions are awaited


def _start() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@asynccontextmanager
async def browser(base: str) -> AsyncIterator[Browser]:
    """A browser on `base`, started and stopped in a thread: the stack's loop runs on
    (a blocked loop would miss the registry's lease renewals)."""
    driver = await asyncio.to_thread(_start)
    try:
        yield Browser(driver, base)
    finally:
        await asyncio.to_thread(driver.quit)


class Browser:
    def __init__(self, driver: webdriver.Chrome, base: str) -> None:
        self.driver = driver
        self.base = base

    async def open(self, path: str) -> None:
        await asyncio.to_thread(self.driver.get, self.base + path)
        await self.live()

    async def live(self) -> None:
        """Until the page's event stream is open (the status says `live`)."""
        await self.text("#status", "live")

    async def go(self, hash_: str) -> None:
        """Another page of the console, in the same document (no load)."""
        await self.js(f"location.hash = {hash_!r}")

    async def js(self, script: str, *args: Any) -> Any:
        return await asyncio.to_thread(self.driver.execute_script, script, *args)

    def _text_now(self, css: str) -> str:
        try:
            return " ".join(e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css))
        except WebDriverException:  # the page redrew under us: look again
            return ""

    async def text(self, css: str, contains: str) -> str:
        """Until an element under `css` shows `contains`; its text then."""

        def check() -> str | None:
            found = self._text_now(css)
            return found if contains in found else None

        return await until(
            lambda: asyncio.to_thread(check), WAIT_S, interval=0.05, what=f"{css} ~ {contains!r}"
        )

    async def click(self, css: str) -> None:
        def press() -> bool:
            try:
                self.driver.find_element(By.CSS_SELECTOR, css).click()
            except WebDriverException:  # not drawn yet, or redrawn under us
                return False
            return True

        await until(lambda: asyncio.to_thread(press), WAIT_S, interval=0.05, what=f"click {css}")

    async def type(self, css: str, text: str) -> None:
        def put() -> bool:
            try:
                field = self.driver.find_element(By.CSS_SELECTOR, css)
                field.clear()
                field.send_keys(text)
            except WebDriverException:  # redrawn under us: the page types into the new one
                return False
            return True

        await until(lambda: asyncio.to_thread(put), WAIT_S, interval=0.05, what=f"type {css}")

    async def choose(self, css: str, value: str) -> None:
        """Choose `value` in the <select> under `css`, as a person does."""

        def pick() -> bool:
            try:
                Select(self.driver.find_element(By.CSS_SELECTOR, css)).select_by_value(value)
            except WebDriverException:  # redrawn under us: choose in the new one
                return False
            return True

        await until(lambda: asyncio.to_thread(pick), WAIT_S, interval=0.05, what=f"choose {css}")

    async def alert_open(self) -> bool:
        def check() -> bool:
            try:
                _ = self.driver.switch_to.alert.text
            except NoAlertPresentException:
                return False
            return True

        return await asyncio.to_thread(check)

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.driver.save_screenshot, str(path))
