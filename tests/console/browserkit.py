"""What a browser test watches on its page: the URLs it requested and the errors it printed."""

from __future__ import annotations

from dataclasses import dataclass, field

from playwright.sync_api import ConsoleMessage, Page


@dataclass
class Watched:
    """A page with everything it asked for and every error it printed."""

    page: Page
    urls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} at {message.location}")

    def assert_clean(self, *secrets: str) -> None:
        """No console error, no uncaught exception, and no secret in any URL the page requested."""
        assert self.errors == []
        assert self.urls, "the page requested nothing"
        for secret in secrets:
            assert secret
            assert not [url for url in self.urls if secret in url]
