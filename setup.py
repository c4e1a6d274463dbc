"""Build and install edged: one `edged` namespace, drivers as `edged.drivers`, Cython extensions from `cext/`."""
import os
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
# Developers may rebuild a subset: EDGED_CEXT_ONLY=codec,cycle python setup.py build_ext --inplace
ONLY = {s for s in os.environ.get("EDGED_CEXT_ONLY", "").split(",") if s}

# Exact pins: pymodbus renames arguments between minor releases; the others are pinned so a
# cell that works today installs the same way next year.
INSTALL_REQUIRES = [
    "pymodbus==3.16.1",
    "pyserial==3.5",
    "python-snap7==3.3.0",
    "asyncua==2.1.0",
    "prometheus-client==0.26.0",
    "aiomqtt==2.5.1",
    "paho-mqtt==2.2.0",
    "protobuf==7.36.2",
    "tomli-w==1.2.0",  # writes the cell copy of `edged simulate --rewrite` (tomllib only reads)
    "cryptography==48.0.0",  # OPC UA certificates and the PKI folder (drivers/opcua/security.py)
]
# atheris: the coverage-guided engine of `make fuzz` (fuzz/harness.py); hypothesis: property tests of the CNC
# line parsers. Exact pins like the others; atheris 3.0.0 installs from a CPython 3.11 manylinux wheel.
TEST_REQUIRES = ["pytest==9.2.0", "pytest-timeout==2.4.0", "pytest-asyncio==1.5.0", "atheris==3.0.0",
                 "hypothesis==6.170.15"]


def extensions() -> list:
    """Every cext/*.pyx becomes edged.cext.<name>, compiled with -O2."""
    from Cython.Build import cythonize

    exts = [
        Extension(
            f"edged.cext.{pyx.stem}",
            [str(pyx.relative_to(HERE))],
            extra_compile_args=["-O2"],
            libraries=["rt", "pthread"],
        )
        for pyx in sorted((HERE / "cext").glob("*.pyx"))
        if not ONLY or pyx.stem in ONLY
    ]
    return cythonize(exts, language_level=3, compiler_directives={"embedsignature": True})


def packages() -> tuple[list[str], dict[str, str]]:
    """Packages under edged/, drivers/ (as edged.drivers) and cext/ (as edged.cext)."""
    pkgs: list[str] = []
    roots = {"edged": "edged", "edged.drivers": "drivers", "edged.cext": "cext"}
    for prefix, root in roots.items():
        for init in sorted((HERE / root).rglob("__init__.py")):
            rel = init.parent.relative_to(HERE / root)
            name = ".".join([prefix, *rel.parts]) if rel.parts else prefix
            if name not in pkgs:
                pkgs.append(name)
    return pkgs, roots


def drivers_entry_points(key: str = "DRIVER_CLASS") -> list[str]:
    """One entry point per drivers/<name>/ whose __init__.py has a ``KEY = "..."`` line.

    ``DRIVER_CLASS = "Name"`` names a class of the package; ``EMULATOR_CLASS = "module:Name"`` names a class
    of one of its modules (so the production driver never imports its emulator).
    """
    eps = []
    for init in sorted((HERE / "drivers").glob("*/__init__.py")):
        pkg = f"edged.drivers.{init.parent.name}"
        for line in init.read_text().splitlines():
            if line.startswith(f"{key} = "):
                target = line.split("=", 1)[1].strip().strip("\"'")
                mod, _, cls = target.rpartition(":")
                eps.append(f"{init.parent.name} = {pkg}{'.' + mod if mod else ''}:{cls}")
    return eps


PACKAGES, PACKAGE_DIR = packages()

setup(
    name="edged",
    version=(HERE / "edged" / "VERSION").read_text().strip(),
    description="Edge runtime daemon for smart manufacturing cells",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"edged": ["VERSION", "demo/*.toml", "py.typed"], "edged.drivers": ["*/*.toml", "*/README.md"],
                  "edged.cext": ["*.pxd"]},
    ext_modules=extensions(),
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={
        "console_scripts": ["edged = edged.cli:main"],
        "edged.drivers": drivers_entry_points(),
        "edged.emulators": drivers_entry_points("EMULATOR_CLASS"),
    },
    zip_safe=False,
)
