"""The documentation keeps up with the code: parameters, defaults, links, the front page's size.

Every parameter of `WriteToAnyCost` and `ReadCbf` is in its docstring's `Args:` block, with
the signature's default, and in the parameter table of docs/beam-api.md with the same
default; neither documents a parameter that does not exist. Every call of a public
transform in the examples binds to its signature. Every relative link of the
README, CONTRIBUTING.md and the docs pages leads to a file that exists, and to a heading that
exists when it names one. The README stays a front page.
"""
import ast
import inspect
import pathlib
import re

import pytest

import transforms
from transforms import ReadCbf, WriteToAnyCost

REPO = pathlib.Path(__file__).resolve().parent.parent
BEAM_API = REPO / "docs" / "beam-api.md"
README_MAX_LINES = 350
REQUIRED = "required"

# Each public transform, and the heading of docs/beam-api.md whose first table lists its parameters.
TRANSFORMS = {
    "WriteToAnyCost": (WriteToAnyCost, "Batch: rows from any pipeline"),
    "ReadCbf": (ReadCbf, "Reading files: `ReadCbf`"),
}
AUDIENCE_PAGES = ("command-line.md", "beam-api.md", "data-rules.md", "failure-and-rerun.md", "operations.md",
                  "emulator.md", "architecture.md")


def documented_pages():
    return [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "benchmarks" / "README.md",
            *sorted((REPO / "docs").glob("*.md"))]


# ---------------------------------------------------------------------------------------------
# Reading Markdown
# ---------------------------------------------------------------------------------------------

def prose_lines(text):
    """The lines outside fenced code blocks, with their inline code spans blanked."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "``", line))
    return lines


def heading_anchors(text):
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated heading numbered -1, -2, ..."""
    anchors, seen, fenced = set(), {}, False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1)).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(text):
    """(line number, target) of every link that is not to a web address."""
    links = []
    for number, line in enumerate(prose_lines(text), 1):
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                links.append((number, target))
    return links


def broken_links(page, root=REPO):
    """What is wrong with each relative link of `page`: a missing file or a missing heading."""
    problems = []
    for number, target in relative_links(page.read_text()):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            problems.append(f"{page.relative_to(root)}: {target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in heading_anchors(destination.read_text()):
            problems.append(f"{page.relative_to(root)}: {target}: no heading #{anchor} in {path or 'this page'}")
    return problems


def section(text, heading):
    """The text under a heading (any level), up to the next heading of the same or a higher level."""
    lines = text.split("\n")
    for index, line in enumerate(lines):
        match = re.match(r"^(#{1,6})\s+(.*?)\s*$", line)
        if match and match.group(2) == heading:
            level = len(match.group(1))
            body = []
            for following in lines[index + 1:]:
                other = re.match(r"^(#{1,6})\s", following)
                if other and len(other.group(1)) <= level:
                    break
                body.append(following)
            return "\n".join(body)
    raise AssertionError(f"no heading {heading!r}")


def parameter_table(text):
    """{parameter: default cell} of the first table whose header starts `| parameter | default |`."""
    rows, inside = {}, False
    for line in text.split("\n"):
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if not inside:
            inside = len(cells) >= 2 and cells[:2] == ["parameter", "default"]
            continue
        if not cells:
            break
        if set(cells[0]) <= set("-: "):
            continue
        rows[cells[0].strip("`")] = cells[1]
    assert rows, "no table with a header | parameter | default |"
    return rows


def literal(text):
    """A default as the docs write it (`None`, `"sum"`, `5_000_000`, 5,000,000, `600.0`) as a value."""
    text = text.strip().strip("`").rstrip(".;:)")
    if text == REQUIRED:
        return inspect.Parameter.empty
    if re.fullmatch(r"\d{1,3}(,\d{3})+", text):
        text = text.replace(",", "")
    try:
        return ast.literal_eval(text)
    except (SyntaxError, ValueError):
        raise AssertionError(f"{text!r} is not a default written as a Python value") from None


def same_value(documented, default):
    return type(documented) is type(default) and documented == default


# ---------------------------------------------------------------------------------------------
# Reading a docstring's Args: block
# ---------------------------------------------------------------------------------------------

def args_block(doc):
    """{argument: its description} of a Google-style docstring's `Args:` block."""
    lines = doc.split("\n")
    start = lines.index("Args:")
    args, name = {}, None
    for line in lines[start + 1:]:
        if line and not line.startswith(" "):
            break
        match = re.match(r"^  (\w+): ?(.*)$", line)
        if match:
            name = match.group(1)
            args[name] = match.group(2)
        elif name and line.strip():
            args[name] += " " + line.strip()
    return args


def docstring_default(description):
    """The default an argument's description states: `Default X`, `default X` or `X (default)`;
    `inspect.Parameter.empty` when it states none."""
    match = (re.search(r"(\"[^\"]*\"|[\w.,]+) \(default\)", description)
             or re.search(r"\bdefault:? (\"[^\"]*\"|[\w.,]+)", description, re.IGNORECASE))
    return literal(match.group(1)) if match else inspect.Parameter.empty


def signature_defaults(transform):
    parameters = list(inspect.signature(transform.__init__).parameters.values())[1:]  # without self
    return {p.name: p.default for p in parameters}


# ---------------------------------------------------------------------------------------------
# The parameters
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TRANSFORMS)
def test_the_docs_table_lists_every_parameter_with_its_default(name):
    transform, heading = TRANSFORMS[name]
    defaults = signature_defaults(transform)
    table = parameter_table(section(BEAM_API.read_text(), heading))
    assert list(table) == list(defaults), (
        f"docs/beam-api.md, {heading!r}: the table lists {list(table)}; {name} takes {list(defaults)}")
    wrong = {p: cell for p, cell in table.items() if not same_value(literal(cell), defaults[p])}
    assert not wrong, f"docs/beam-api.md, {name}: defaults {wrong}, the signature says " + str(
        {p: defaults[p] for p in wrong})


@pytest.mark.parametrize("name", TRANSFORMS)
def test_the_docstring_documents_every_parameter_and_its_default(name):
    transform, _ = TRANSFORMS[name]
    defaults = signature_defaults(transform)
    args = args_block(inspect.getdoc(transform))
    assert sorted(args) == sorted(defaults), (
        f"{name}'s Args: block documents {sorted(args)}; it takes {sorted(defaults)}")
    wrong = {p: docstring_default(text) for p, text in args.items()
             if not same_value(docstring_default(text), defaults[p])}
    assert not wrong, f"{name}'s Args: block states defaults {wrong}; the signature says " + str(
        {p: defaults[p] for p in wrong})


def test_the_checkers_see_a_wrong_default_and_a_missing_parameter():
    text = ("## T\n\n| parameter | default | meaning |\n|---|---|---|\n"
            "| `a` | required | |\n| `b` | `5_000_000` | |\n| `c` | 5,000,000 | |\n| `d` | `\"sum\"` | |\n")
    table = parameter_table(section(text, "T"))
    assert list(table) == ["a", "b", "c", "d"]
    assert [literal(cell) for cell in table.values()] == [inspect.Parameter.empty, 5_000_000, 5_000_000, "sum"]
    assert not same_value(literal("`600`"), 600.0) and not same_value(literal("`None`"), 0)

    class T:
        """Doc.

        Args:
          a: the first. Default "x".
          b: "sum" (default) or
            something else.
          c: nothing said about it.

        Returns:
          nothing.
        """
    args = args_block(inspect.getdoc(T))
    assert list(args) == ["a", "b", "c"]
    assert [docstring_default(text) for text in args.values()] == ["x", "sum", inspect.Parameter.empty]


# ---------------------------------------------------------------------------------------------
# Links and pages
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", documented_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_somewhere(page):
    assert page.exists(), f"{page.relative_to(REPO)} is missing"
    assert not broken_links(page)


def test_the_link_checker_sees_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Watching for new files (`--watch`)\n## A\n## A\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#watching-for-new-files---watch) [ok](other.md#a-1) [ok](#top)\n"
                    "# Top\n[gone](missing.md) [bad](other.md#nowhere) [web](https://example.com/x)\n"
                    "`[code](missing-in-code.md)`\n```\n[block](missing-in-block.md)\n```\n")
    assert broken_links(page, tmp_path) == ["page.md: missing.md: no such file",
                                  "page.md: other.md#nowhere: no heading #nowhere in other.md"]


def python_examples(page):
    """The ```python blocks of a page, parsed."""
    return [ast.parse(block, f"{page.name} example") for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]


@pytest.mark.parametrize("page", documented_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_the_examples_call_the_transforms_as_they_are(page):
    """Each example's call of a public transform binds to its signature: no parameter that
    was renamed or never existed, none missing."""
    calls = [node for tree in python_examples(page) for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in transforms.__all__]
    for call in calls:
        signature = inspect.signature(getattr(transforms, call.func.id).__init__)
        try:
            signature.bind(None, *call.args, **{keyword.arg: keyword.value for keyword in call.keywords})
        except TypeError as err:
            raise AssertionError(f"{page.relative_to(REPO)} line {call.lineno} of an example: "
                                 f"{call.func.id}(...): {err}") from None


def test_the_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().split("\n")
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the front page holds {README_MAX_LINES}"


def test_the_readme_links_every_audience_page():
    linked = {target.partition("#")[0] for _, target in relative_links((REPO / "README.md").read_text())}
    for page in AUDIENCE_PAGES:
        assert (REPO / "docs" / page).exists(), f"docs/{page} is missing"
        assert f"docs/{page}" in linked, f"README.md does not link docs/{page}"
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in linked, f"README.md does not link docs/{page.name}"
    assert {"CONTRIBUTING.md", "benchmarks/README.md", "LICENSE"} <= linked


# ---------------------------------------------------------------------------------------------
# The licence
# ---------------------------------------------------------------------------------------------

def test_the_license_is_the_whole_apache_license_2_0():
    text = (REPO / "LICENSE").read_text()
    assert text.strip().startswith("Apache License\n                           Version 2.0, January 2004")
    for number, title in enumerate(["Definitions", "Grant of Copyright License", "Grant of Patent License",
                                    "Redistribution", "Submission of Contributions", "Trademarks",
                                    "Disclaimer of Warranty", "Limitation of Liability",
                                    "Accepting Warranty or Additional Liability"], 1):
        assert f"{number}. {title}." in text, title
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text
    assert text.rstrip().endswith("limitations under the License.")
    assert len(text.split("\n")) >= 200


def test_setup_declares_the_license():
    call = next(node for node in ast.walk(ast.parse((REPO / "setup.py").read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "setup")
    keywords = {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords
                if keyword.arg in ("license", "classifiers")}
    assert keywords.get("license") == "Apache-2.0"
    assert "License :: OSI Approved :: Apache Software License" in keywords.get("classifiers", [])
