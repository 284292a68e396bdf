r"""The docstring examples of every module of the package run and hold."""

import doctest
import importlib
import pkgutil

import pytest

import llamafactory_fea


MODULES = sorted(info.name for info in pkgutil.walk_packages(llamafactory_fea.__path__, "llamafactory_fea."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    assert doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS).failed == 0


def test_the_examples_are_found() -> None:
    finder = doctest.DocTestFinder()
    modules = ("llamafactory_fea.registry", "llamafactory_fea.fea.parsing")
    assert all(any(test.examples for test in finder.find(importlib.import_module(name))) for name in modules)
