"""Reading the three renderings back in tests, the way a person or a script would."""

from __future__ import annotations

from html.parser import HTMLParser

RULE_HEAVY, RULE_LIGHT = "=" * 78, "-" * 78


def parse_text(text: str) -> dict[str, dict[str, list[str]]]:
    """``{folder title: {section heading: lines}}``; the final section under title ``""``."""
    lines = text.splitlines()
    result: dict[str, dict[str, list[str]]] = {}
    title, heading, i = "", None, 0
    while i < len(lines):
        line = lines[i]
        if line == RULE_HEAVY and i + 2 < len(lines) and lines[i + 2] == RULE_HEAVY:
            # a one-line heavy block: the final section
            title, heading = "", lines[i + 1]
            result.setdefault(title, {})[heading] = []
            i += 3
            continue
        if line == RULE_HEAVY:
            title = lines[i + 1]
            result[title] = {}
            while lines[i + 1] != RULE_HEAVY:
                i += 1
            i += 2
            heading = None
            continue
        if line == RULE_LIGHT:
            heading = lines[i + 1]
            result[title][heading] = []
            i += 3
            continue
        if heading is not None and line:
            result[title][heading].append(line)
        elif not line and title == "" and heading is not None:
            heading = None  # the totals line follows the final section
        i += 1
    return result


class _HtmlSections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict[str, list[str]]] = {}
        self.external: list[str] = []
        self._tag, self._h2, self._h3 = "", "", ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.external.append(value)
        if tag == "script":
            self.external.append("<script>")

    def handle_data(self, data: str) -> None:
        if self._tag == "h2":
            self._h2 = data
            self.sections.setdefault(data, {})
        elif self._tag == "h3":
            self._h3 = data
            self.sections[self._h2][data] = []
        elif self._tag == "pre" and self._h2 == "COULD NOT BE CHECKED":
            self.sections[self._h2].setdefault("", []).extend(data.splitlines())
        elif self._tag == "pre":
            self.sections[self._h2][self._h3].extend(data.splitlines())

    def handle_endtag(self, tag: str) -> None:
        self._tag = ""


def parse_html(page: str) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """``({h2 title: {h3 heading: pre lines}}, external references)``."""
    parser = _HtmlSections()
    parser.feed(page)
    return parser.sections, parser.external


def paths_in(lines: list[str]) -> list[str]:
    """The relative paths a section names (first word of each line), or [] for ``None``."""
    return [] if lines == ["None"] else [line.split("  ")[0] for line in lines]
