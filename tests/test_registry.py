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


def _library_tables():
    from pointmap.data import TRANSFORMS, build_dataset, build_transforms
    from pointmap.data.registry import DATASETS
    from pointmap.engine import HOOKS, TASKS, build_hooks
    from pointmap.models import create_model
    from pointmap.models.registry import MODELS

    # each table, a name it holds, and the public call that looks a name up in it
    return [(TRANSFORMS, "normalize", lambda n: build_transforms([{"name": n}])),
            (DATASETS, "synthetic", lambda n: build_dataset(n, None, "train")),
            (HOOKS, "evaluate", lambda n: build_hooks([{"name": n}])),
            (TASKS, "pretrain", lambda n: TASKS.build(n, None)),
            (MODELS, "hybridnet_s", lambda n: create_model(n))]


@pytest.mark.parametrize("index", range(5))
def test_every_library_table_is_one_registry(index):
    """The tables the library fills behave as the class above: a second registration of a name is refused
    (the table keeps the first), and the public call that looks names up names the valid ones."""
    table, name, lookup = _library_tables()[index]
    first = table[name]
    with pytest.raises(ValueError, match=f"{table.kind} '{name}' is registered twice"):
        table.register(name, object())
    assert table[name] is first
    with pytest.raises(ValueError, match=f"unknown {table.kind} 'no_such_name'.*{name}"):
        lookup("no_such_name")
