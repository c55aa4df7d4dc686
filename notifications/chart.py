"""Size trends drawn for people: a small PNG bar chart for email, a sparkline for text."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> str:
    """One character per value, higher for larger; a space where there is no value."""
    present = [value for value in values if value is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    span = (high - low) or 1.0
    return "".join(
        " " if value is None else SPARKS[int((value - low) / span * (len(SPARKS) - 1))]
        for value in values
    )


def bar_chart_png(
    values: list[float | None], labels: list[str], *, width: int = 480, height: int = 140
) -> bytes:
    """A PNG bar chart of ``values`` (None: no bar) with ``labels`` under the bars."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    top, bottom, left = 10, height - 22, 8
    present = [value for value in values if value is not None]
    high = max(present) if present else 1.0
    slot = (width - 2 * left) / max(len(values), 1)
    for index, (value, label) in enumerate(zip(values, labels, strict=True)):
        x0 = left + index * slot + slot * 0.15
        x1 = left + (index + 1) * slot - slot * 0.15
        if value is not None and high > 0:
            y0 = bottom - (bottom - top) * (value / high)
            colour = "#1f6feb" if index < len(values) - 1 else "#0b3d91"
            draw.rectangle((x0, y0, x1, bottom), fill=colour)
        draw.text((x0, bottom + 5), label, fill="#555555")
    draw.line((left, bottom, width - left, bottom), fill="#999999")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
