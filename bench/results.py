"""bench/RESULTS.md: each benchmark owns one section between <!-- key --> markers."""
from pathlib import Path


def write_section(path: Path, key: str, body: str):
    """Replace the section between <!-- key --> markers (append if absent), atomically."""
    text = path.read_text() if path.exists() else "# cvene benchmark results\n"
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
