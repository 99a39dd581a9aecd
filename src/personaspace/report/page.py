"""Self-contained HTML pages: one stylesheet, tables of (name, value) rows, inline images."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

STYLE = """body{{font-family:system-ui,sans-serif;max-width:{width}px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:4px 8px;
text-align:left;font-size:14px}}th{{background:#f4f4f4}}img{{max-width:100%}}
pre{{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}}"""


def table(rows: Iterable[tuple[str, Any]]) -> str:
    """An HTML table of (name, value) rows, both escaped.

    Example:
        >>> table([("a<b", 1)])
        '<table><tr><th>a&lt;b</th><td>1</td></tr></table>'
    """
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


def pre_json(data: Any) -> str:
    """``data`` as indented JSON in a ``<pre>`` block."""
    return f"<pre>{html.escape(json.dumps(data, indent=1))}</pre>"


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, for pages that carry their images inside."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def figures(images: Sequence[tuple[str, str | None]]) -> str:
    """``<figure>`` elements for (image source, caption or None) pairs."""
    parts = []
    for src, caption in images:
        note = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        parts.append(f'<figure><img src="{src}">{note}</figure>')
    return "".join(parts)


def page(title: str, body: str, *, width: int = 1000) -> str:
    """A whole HTML document: ``title`` (escaped) and ``body`` (HTML) with the shared style.

    Example:
        >>> page("R&D", "<p>hi</p>").splitlines()[1]
        '<title>R&amp;D</title>'
    """
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{STYLE.format(width=width)}</style></head><body>
{body}
</body></html>"""
