"""The package's ``__all__`` (spelled out for linters) and its lazy exports must not drift apart."""

import largekernel


def test_all_lists_exactly_the_lazy_exports():
    assert len(largekernel.__all__) == len(set(largekernel.__all__))
    assert set(largekernel.__all__) == {*largekernel._EXPORTS, "__version__"}


def test_every_listed_name_resolves():
    for name in largekernel.__all__:
        assert getattr(largekernel, name) is not None, name
