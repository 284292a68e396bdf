r"""Where the shipped folders are: beside the package in a checkout, inside it in a wheel (`pip install .`)."""

from pathlib import Path


PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    r"""The folder `name` (`data_registry`, `examples`): the checkout's when installed editable, else the wheel's copy."""
    checkout = PACKAGE.parent / name  # a wheel's site-packages may hold another package's `examples`: ask pyproject
    return checkout if (PACKAGE.parent / "pyproject.toml").is_file() and checkout.is_dir() else PACKAGE / name


def data_registry_dir() -> Path:
    r"""The plugin's `data_registry` folder (its dataset_info.json lists the FEA datasets and the demo data)."""
    return resource_dir("data_registry")


def examples_dir() -> Path:
    r"""The plugin's `examples` folder (the stage YAMLs)."""
    return resource_dir("examples")
