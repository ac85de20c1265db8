"""Every path that talks to IB goes through the message budget (issue 13): the adapter's outgoing calls are listed
from the source, and each must wait for the budget (``self._paced``) before it, or be one of the few whose caller
is the budget itself - a new call site fails here until it is paced or its reason is added below."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "tickguard"
SENDING = ("req", "cancel", "place", "whatIf", "connect", "calculate", "exercise", "query")

# ib_async calls that may go without ``_paced`` in the function, and why
RELEASED_BY_THE_BUDGET = {
    ("ib_client.py", "place_order", "placeOrder"): "the executor calls place_order only when the budget releases it",
    ("ib_client.py", "cancel_order", "cancelOrder"): "the executor, the engine (stray orders) and the adapter (held "
                                                      "cancels) call cancel_order only when the budget releases it",
    ("ib_client.py", "_connect_or_refused", "connectAsync"): "the start-up sync cannot wait: charged as it leaves",
    ("ib_client.py", "_connect_once", "reqAccountUpdatesAsync"): "part of the connection's start-up: charged",
}
# who may call the broker's place_order / cancel_order, each of them handed to the budget first
ORDER_CALLERS = {
    ("runtime/order_executor.py", "_place"), ("runtime/order_executor.py", "_send_cancel"),
    ("runtime/engine.py", "cancel"),  # the inner function _cancel_stray hands to the budget
}


def functions(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def calls_in(fn: ast.AST):
    """The calls a function makes itself (not those of functions defined inside it: they are listed on their own)."""
    todo = list(ast.iter_child_nodes(fn))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def test_every_request_the_ib_adapter_makes_waits_for_the_budget():
    found, unpaced = [], []
    for path in sorted((SRC / "adapters" / "ib").glob("*.py")):
        for fn in functions(path):
            paced_at = [c.lineno for c in calls_in(fn) if c.func.attr == "_paced"]
            for call in calls_in(fn):
                target = call.func
                if not (isinstance(target.value, ast.Attribute) and target.value.attr == "ib"
                        and target.attr.startswith(SENDING)):
                    continue
                site = (path.name, fn.name, target.attr)
                found.append(site)
                if site not in RELEASED_BY_THE_BUDGET and not any(line < call.lineno for line in paced_at):
                    unpaced.append(f"{path.name}:{call.lineno} {fn.name}: self.ib.{target.attr}")
    assert unpaced == [], "requests to IB that do not wait for the message budget"
    assert len(found) >= 10  # the listing finds the adapter's calls (a broken walk would pass vacuously)
    assert set(RELEASED_BY_THE_BUDGET) <= set(found), "an exemption for a call that no longer exists"


def test_only_budgeted_code_calls_the_brokers_order_methods():
    callers = set()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("adapters/"):
            continue  # the adapters define them (and the IB one's own call is checked above)
        for fn in functions(path):
            for call in calls_in(fn):
                if call.func.attr in ("place_order", "cancel_order") and fn.name not in ("place_order", "cancel_order"):
                    callers.add((rel, fn.name))
    assert callers == ORDER_CALLERS
