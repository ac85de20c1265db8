import re
import socket
import subprocess
import time
from pathlib import Path

from tickguard.config import reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_config_reference_is_current():
    text = README.read_text()
    start = text.index("<!-- config-reference:start -->") + len("<!-- config-reference:start -->")
    end = text.index("<!-- config-reference:end -->")
    assert text[start:end].strip() == reference_markdown().strip(), "run: tickguard config --reference"


def test_readme_names_the_two_commands_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./dev test" in ci and "./dev test" in README.read_text() and "./dev sim" in README.read_text()


def readme_blocks(text: str) -> list[tuple[str, str, str]]:
    """The README's marked blocks, in order: (``run`` | ``background`` | ``file NAME``, language, body)."""
    marked = re.compile(r"<!-- readme: (run|background|file [\w.]+) -->\n```(\w+)\n(.*?)```", re.S)
    return [(m.group(1), m.group(2), m.group(3)) for m in marked.finditer(text)]


def test_the_first_hour_runs_as_written(tmp_path):
    """Every marked block of "Your first hour", in order, in a fresh directory: files written, commands run as a
    user would type them (with a free port instead of 4002, and ./dev and .venv/bin pointing at this checkout);
    the fake gateway in the background.  Each command must succeed and no traceback may appear."""
    blocks = readme_blocks(README.read_text())
    assert [kind.split()[0] for kind, _, _ in blocks] == ["run", "file", "background", "run"]
    port = str(free_port())
    root = README.parent

    def localized(body: str) -> str:
        return (body.replace("4002", port).replace("./dev ", f"{root}/dev ")
                .replace(".venv/bin/", f"{root}/.venv/bin/"))

    background: list[subprocess.Popen] = []
    try:
        for kind, _lang, body in blocks:
            if kind.startswith("file "):
                (tmp_path / kind.split()[1]).write_text(localized(body))
            elif kind == "background":
                out = tmp_path / f"background-{len(background)}.log"  # a file: a pipe nobody reads fills up
                proc = subprocess.Popen(["bash", "-c", f"exec {localized(body).strip()}"], cwd=tmp_path,
                                        stdout=out.open("w"), stderr=subprocess.STDOUT, text=True)
                background.append(proc)
                deadline = time.monotonic() + 30
                while "listening on" not in out.read_text():
                    assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
                    time.sleep(0.05)
            else:
                for line in localized(body).strip().splitlines():
                    command = line.split("#")[0].strip()
                    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                                          timeout=180)
                    output = done.stdout + done.stderr
                    assert done.returncode == 0 and "Traceback" not in output, (command, output[-3000:])
                    if " doctor " in command:
                        assert "every check passed" in done.stdout
                    if "--duration 5" in command:
                        assert "recovered 1 open trade(s)" in done.stderr and "accepted" not in done.stderr
    finally:
        for proc in background:
            proc.terminate()
            proc.wait(10)
    assert (tmp_path / "first-sim.json").exists() and (tmp_path / "first.db").exists()
