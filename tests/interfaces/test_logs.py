"""The log set-up: where it goes, what it looks like, which levels, and what it never writes."""

from __future__ import annotations

import json
import logging

import pytest

from tickguard.config import LogConfig, load
from tickguard.interfaces.logs import LogSetupError, component, parse_levels, setup


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
        h.close()
    root.setLevel(level)
    for name in ("tickguard", "ib_async", "tickguard.adapters.ib", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_a_log_file_gets_one_text_line_per_event(tmp_path, restore_logging):
    out = tmp_path / "tickguard.log"
    setup(LogConfig(file=str(out)))
    setup(LogConfig(file=str(out)))  # set up again (a second command in one process): still one handler
    logging.getLogger("tickguard.runtime.engine").info("recovered %d open trade(s)", 2)
    [line] = lines(out)
    assert line.endswith("INFO tickguard.runtime.engine: recovered 2 open trade(s)") and line[:4].isdigit()


def test_json_lines_for_machines(tmp_path, restore_logging):
    out = tmp_path / "tickguard.log"
    setup(LogConfig(file=str(out), format="text"), fmt="json")  # the command line's --log-format wins
    logging.getLogger("tickguard.interfaces.ib_session").warning("UNGUARDED %s", "T00001")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("tickguard.adapters.ib.errors").exception("callback failed")
    first, second = (json.loads(line) for line in lines(out))
    assert first["level"] == "WARNING" and first["logger"] == "tickguard.interfaces.ib_session"
    assert first["message"] == "UNGUARDED T00001" and first["time"].startswith("20")
    assert "RuntimeError: boom" in second["exc_info"]


def test_ib_asyncs_copy_of_an_ib_message_is_dropped_the_rest_of_its_log_kept(tmp_path, restore_logging):
    out = tmp_path / "tickguard.log"
    setup(LogConfig(file=str(out), components={"ib_async": "INFO"}))
    logging.getLogger("ib_async.wrapper").error("Error 326, reqId -1: Unable to connect as the client id is in use")
    logging.getLogger("ib_async.wrapper").info("Warning 2104, reqId -1: Market data farm connection is OK:usfarm")
    logging.getLogger("ib_async.client").error("Peer closed connection. clientId 5 already in use?")
    logging.getLogger("ib_async.client").info("Connected")
    logging.getLogger("ib_async.wrapper").error("Error handling fields: ...")  # a decoder failure: kept
    assert [line.split(": ", 1)[1] for line in lines(out)] == ["Connected", "Error handling fields: ..."]


def test_levels_per_component(tmp_path, restore_logging):
    out = tmp_path / "tickguard.log"
    setup(LogConfig(file=str(out), level="WARNING", components={"adapters.ib": "DEBUG"}),
          levels=["runtime.engine=ERROR"])
    logging.getLogger("tickguard.adapters.ib.ib_client").debug("seen: adapters.ib is at DEBUG")
    logging.getLogger("tickguard.store.journal").info("not seen: tickguard is at WARNING")
    logging.getLogger("tickguard.runtime.engine").warning("not seen: runtime.engine is at ERROR")
    logging.getLogger("ib_async.wrapper").info("not seen: ib_async is at WARNING by default")
    assert [line.split(": ", 1)[1] for line in lines(out)] == ["seen: adapters.ib is at DEBUG"]


def test_a_password_is_never_written_whoever_logs_it(tmp_path, restore_logging):
    out = tmp_path / "tickguard.log"
    setup(LogConfig(file=str(out)))
    logging.getLogger("sqlalchemy.engine").warning("connect to %s failed", "postgresql+psycopg://bob:s3cret@db/tg")
    logging.getLogger("tickguard.store.journal").error("dsn host=db user=bob password=s3cret dbname=tg")
    text = out.read_text()
    assert "s3cret" not in text and "bob:***@db/tg" in text and "password=***" in text


@pytest.mark.parametrize(("options", "error"), [
    (["LOUD"], "'LOUD' is not a level"),
    (["adapters.ib="], "'(empty)' is not a level"),
    (["=DEBUG"], "needs a name"),
])
def test_bad_levels_say_what_is_wrong(options, error):
    with pytest.raises(LogSetupError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_levels(options)


def test_components_are_module_paths_under_tickguard():
    assert component("adapters.ib") == "tickguard.adapters.ib"
    assert component("tickguard.store") == "tickguard.store" and component("ib_async.client") == "ib_async.client"
    assert parse_levels(["info", "adapters.ib=debug"]) == ("INFO", {"tickguard.adapters.ib": "DEBUG"})


def test_an_unwritable_log_file_is_a_clear_error(tmp_path):
    with pytest.raises(LogSetupError, match=r"\[log\] file '.*' cannot be written: (Is a directory|Permission)"):
        setup(LogConfig(file=str(tmp_path)))


def test_the_config_refuses_an_unknown_level_or_format():
    with pytest.raises(ValueError, match="log.components: Value error, log level 'chatty'"):
        load(None, {"log": {"components": {"ib_async": "chatty"}}})
    with pytest.raises(ValueError, match="log.format"):
        load(None, {"log": {"format": "xml"}})


def test_a_message_ib_async_cannot_handle_is_one_line_without_its_fields_or_traceback(capsys):
    setup(LogConfig())
    decoder = logging.getLogger("ib_async.decoder")
    try:
        raise KeyError("completedOrders")
    except KeyError:
        decoder.exception("Error for completedOrder(%s):", ["x" * 5000])
    err = capsys.readouterr().err
    assert "ib_async could not handle a message from IB (completedOrder): KeyError: 'completedOrders'" in err
    assert "Traceback" not in err and "xxxx" not in err and len(err.splitlines()) == 1
