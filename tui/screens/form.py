"""What the dialogs that ask for a request (evict, split) share: submit, cancel, an error line."""

from __future__ import annotations

from typing import TypeVar

from textual.screen import ModalScreen
from textual.widgets import Button, Static

__all__ = ["FormDialog"]

RequestT = TypeVar("RequestT")


class FormDialog(ModalScreen[RequestT | None]):
    """A modal that dismisses with a request, or with None when cancelled.

    Subclasses build the request in ``_request`` (None, after ``_error``, when the form is
    not valid yet) and name their submit button in ``SUBMIT_BUTTON``; every other button cancels.
    """

    SUBMIT_BUTTON = "submit"

    def _request(self) -> RequestT | None:
        raise NotImplementedError

    def _error(self, text: str) -> None:
        self.query_one("#error", Static).update(text)

    def action_submit(self) -> None:
        request = self._request()
        if request is not None:
            self.dismiss(request)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == self.SUBMIT_BUTTON:
            self.action_submit()
        else:
            self.dismiss(None)
