from pathlib import Path

from tickguard.config import reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_reference_is_current():
    text = README.read_text()
    start = text.index("<!-- config-reference:start -->") + len("<!-- config-reference:start -->")
    end = text.index("<!-- config-reference:end -->")
    assert text[start:end].strip() == reference_markdown().strip(), "run: tickguard config --reference"


def test_readme_names_the_two_commands_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./dev test" in ci and "./dev test" in README.read_text() and "./dev sim" in README.read_text()
