"""Rendering notifications from Jinja2 templates.

Templates are named ``<kind>-subject.txt``, ``<kind>-body.txt`` and ``<kind>-body.html``. A
directory named by TEMPLATE_DIR can override any of them. Rendering is sandboxed, with
StrictUndefined (a missing value is an error, not a blank), and HTML is autoescaped. A custom
template that fails falls back to the built-in one with a logged error: never a lost alert.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from notifications.channels.base import Notification

log = logging.getLogger("bakup")

BUILT_IN = Path(__file__).parent / "templates"


def _environment(directories: list[Path]) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=ChoiceLoader([FileSystemLoader(str(directory)) for directory in directories]),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
    )


class Renderer:
    """Renders notifications, preferring templates in ``custom_dir``."""

    def __init__(self, custom_dir: Path | None = None) -> None:
        self.built_in = _environment([BUILT_IN])
        self.custom = _environment([custom_dir, BUILT_IN]) if custom_dir else None

    def render(
        self,
        kind: str,
        database: str,
        context: dict[str, Any],
        *,
        template: str | None = None,
        images: dict[str, bytes] | None = None,
        fields: dict[str, Any] | None = None,
    ) -> Notification:
        """Render the ``template`` set (default: ``kind``) with ``context``.

        Raises TemplateError only if a built-in template fails (a bug).
        """
        name = template or kind
        context = {"database": database, **context}
        parts = {}
        for part in ("subject.txt", "body.txt", "body.html"):
            parts[part] = self._render_part(f"{name}-{part}", context)
        return Notification(
            kind=kind,
            database=database,
            subject=" ".join(parts["subject.txt"].split()),
            text=parts["body.txt"].strip() + "\n",
            html=parts["body.html"],
            fields={**(fields or {}), **{k: v for k, v in context.items() if _plain(v)}},
            images=images or {},
        )

    def _render_part(self, name: str, context: dict[str, Any]) -> str:
        if self.custom is not None:
            try:
                return self.custom.get_template(name).render(context)
            except TemplateError as error:
                log.error(
                    "ERROR: custom template %s failed (%s); using the built-in one", name, error
                )
        return self.built_in.get_template(name).render(context)


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None
