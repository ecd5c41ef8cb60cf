"""``report.html``: the report's ``index.md`` as one self-contained page, figures embedded, for a browser and for
MLflow's artifact viewer.

MLflow shows a Markdown artifact as plain text, so the figure links of ``index.md`` print as literal text there;
an HTML artifact is rendered. Everything the page shows is inside the file: figures as base64 PNG ``data:`` URIs,
tables as HTML tables, a stylesheet in a ``<style>`` element; links to the report's other files become their
names in ``<code>`` (a relative link would not resolve inside the viewer), so the page never fetches anything.

The input is the Markdown :mod:`mlattack.report.build` writes, a small known subset: ``#`` headings, pipe tables,
one image per line, ``>`` notes, paragraphs with ``code`` spans and links; it is converted line by line.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path

IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")
LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<href>[^)]+)\)")
CODE = re.compile(r"`([^`]+)`")

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 24px auto; max-width: 1500px; padding: 0 16px; }
h1 { font-size: 26px; } h2 { font-size: 21px; margin-top: 36px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 17px; margin-top: 24px; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fbfcfd; }
.scroll { overflow-x: auto; max-width: 100%; }
figure { margin: 12px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { font-size: 13px; color: #57606a; }
blockquote { margin: 8px 0; padding: 4px 12px; border-left: 4px solid #d0d7de; color: #57606a; }
code { font-size: 12px; background: #f6f8fa; padding: 1px 4px; border-radius: 4px; }
"""


def _inline(text: str) -> str:
    """Escape, then ``code`` spans; a link becomes its text with the target named (nothing is fetched)."""
    out, last = [], 0
    for m in LINK.finditer(text):
        out.append(_code(text[last : m.start()]))
        label, href = m.group("text"), m.group("href")
        same = label == Path(href).suffix.lstrip(".") or label == href
        out.append(
            f"<code>{html.escape(href)}</code>"
            if same
            else f"{_code(label)} (<code>{html.escape(href)}</code>)"
        )
        last = m.end()
    out.append(_code(text[last:]))
    return "".join(out)


def _code(text: str) -> str:
    return CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(text, quote=False))


def _data_uri(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _table(lines: list[str]) -> str:
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    head, body = cells(lines[0]), [cells(line) for line in lines[2:]]
    rows = ["<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"]
    rows += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body]
    return '<div class="scroll"><table>' + "\n".join(rows) + "</table></div>"


def markdown_to_html(markdown: str, root: Path, title: str = "Attack report") -> str:
    """The whole page; images are read from ``root`` (the report folder) and embedded."""
    parts: list[str] = []
    paragraph: list[str] = []
    lines = markdown.splitlines()

    def flush() -> None:
        if paragraph:
            parts.append("<p>" + " ".join(_inline(p) for p in paragraph) + "</p>")
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            parts.append(_table(block))
            continue
        if heading := re.match(r"^(#{1,6}) (.*)$", line):
            flush()
            level = len(heading.group(1))
            parts.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif image := IMAGE.match(line):
            flush()
            path = root / image.group("src")
            alt = html.escape(image.group("alt"))
            if path.is_file():
                parts.append(
                    f'<figure><img src="{_data_uri(path)}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'
                )
            else:
                parts.append(f"<p>(figure missing: <code>{html.escape(image.group('src'))}</code>)</p>")
        elif line.startswith(">"):
            flush()
            parts.append(f"<blockquote>{_inline(line.lstrip('> '))}</blockquote>")
        elif not line.strip():
            flush()
        else:
            paragraph.append(line)
        i += 1
    flush()
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(parts) + "\n</body>\n</html>\n"
    )


def write_html(out: Path, markdown: str, title: str = "Attack report") -> Path:
    """``out/report.html`` from the index's Markdown."""
    path = out / "report.html"
    path.write_text(markdown_to_html(markdown, out, title), encoding="utf-8")
    return path
