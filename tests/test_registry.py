"""One Registry class behind models, data sets, tasks, hooks and transforms: duplicates refused unless overridden."""
import pytest

from pointmap.registry import Registry


def test_registry_refuses_duplicates_unless_overridden():
    reg = Registry("widget")
    reg.register("a", int)

    @reg.register()
    def b():
        return 1

    assert reg.names() == ["a", "b"] and "b" in reg and reg.build("b") == 1
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a", float)
    reg.register("a", float, override=True)
    assert reg["a"] is float
    with pytest.raises(ValueError, match="unknown widget 'c'; valid names: a, b"):
        reg.get("c")
    from pointmap.data import TRANSFORMS
    from pointmap.data.registry import DATASETS
    from pointmap.engine import HOOKS, TASKS
    from pointmap.models.registry import MODELS

    assert all(isinstance(r, Registry) for r in (TRANSFORMS, DATASETS, HOOKS, TASKS, MODELS))
