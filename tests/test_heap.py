"""The gateway sets its long-lived objects aside from the cyclic garbage collector (settle_heap)."""

import gc
import weakref

import pytest

API = "kind: Api\nroutes:\n  GET /books: {}\n"


class Cycle:
    def __init__(self) -> None:
        self.me = self  # freed only by the cyclic collector


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test run collects as usual


def tracked(obj: object) -> bool:
    """Whether the collector still walks obj (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


async def test_running_sets_the_startup_heap_aside(make_gateway, unfrozen):
    _, gate = make_gateway({"api.yaml": API}, sidegate_reload_interval="0")
    assert gc.get_freeze_count() == 0 and tracked(gate.policy)
    await gate.running()
    assert gc.get_freeze_count() > 10_000  # mitmproxy, the policy set, the test run itself
    assert not tracked(gate.policy)
    await gate.done()


async def test_a_reload_sets_the_new_set_aside_and_collects_what_died_since(make_gateway, tmp_path, unfrozen):
    _, gate = make_gateway({"api.yaml": API}, sidegate_reload_interval="0")
    cycle = Cycle()
    gone = weakref.ref(cycle)
    await gate.running()  # the cycle is frozen with everything else
    del cycle
    gc.collect()
    assert gone() is not None  # frozen garbage stays until the heap is settled again
    (tmp_path / "policies" / "api.yaml").write_text("kind: Api\nroutes:\n  GET /authors: {}\n")
    assert gate.reload() is True
    assert gone() is None
    assert not tracked(gate.policy) and gc.get_freeze_count() > 10_000
    await gate.done()
