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
    ("ib_client.py", "place_order", "place_new"): "the executor calls place_order only when the budget releases it",
    ("placing.py", "place_new", "placeOrder"): "IB.placeOrder without its repr: called by place_order alone (below)",
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
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
            yield node
        todo.extend(ast.iter_child_nodes(node))


# the receivers of a request to IB: the adapter's ib_async client (``self.ib``), or one handed to a helper (``ib``)
IB_RECEIVERS = {"self.ib", "ib", "self.ib.client", "ib.client"}
IB_SENDERS = {"place_new"}  # the adapters' own functions that send (adapters/ib/placing.py)


def sends(call: ast.Call) -> str | None:
    """The request a call makes to IB, if it makes one."""
    target = call.func
    if isinstance(target, ast.Name):
        return target.id if target.id in IB_SENDERS else None
    if ast.unparse(target.value) in IB_RECEIVERS and target.attr.startswith(SENDING):
        return target.attr
    return None


def test_every_request_the_ib_adapter_makes_waits_for_the_budget():
    found, unpaced = [], []
    for path in sorted((SRC / "adapters" / "ib").glob("*.py")):
        for fn in functions(path):
            paced_at = [c.lineno for c in calls_in(fn) if isinstance(c.func, ast.Attribute) and c.func.attr == "_paced"]
            for call in calls_in(fn):
                request = sends(call)
                if request is None:
                    continue
                site = (path.name, fn.name, request)
                found.append(site)
                if site not in RELEASED_BY_THE_BUDGET and not any(line < call.lineno for line in paced_at):
                    unpaced.append(f"{path.name}:{call.lineno} {fn.name}: {ast.unparse(call.func)}")
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
                if (getattr(call.func, "attr", None) in ("place_order", "cancel_order")
                        and fn.name not in ("place_order", "cancel_order")):
                    callers.add((rel, fn.name))
    assert callers == ORDER_CALLERS


def test_the_adapters_own_senders_are_called_only_where_the_budget_released_the_call():
    """``place_new`` sends without ``_paced``: only the budget-released ``IBBroker.place_order`` may call it."""
    callers = {(path.relative_to(SRC).as_posix(), fn.name)
               for path in sorted(SRC.rglob("*.py")) for fn in functions(path) for call in calls_in(fn)
               if isinstance(call.func, ast.Name) and call.func.id in IB_SENDERS}
    assert callers == {("adapters/ib/ib_client.py", "place_order")}
