"""Drivers register through entry points and are imported only when a cell uses them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_entry_points_list_drivers_without_importing_them() -> None:
    code = ("import sys; from edged.driver import available_drivers as a; names = sorted(a()); "
            "print(names); print([m for m in sys.modules if m.startswith('edged.drivers.')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "modbus" in out[0]
    assert out[1] == "[]"


def test_loading_a_cell_imports_only_the_drivers_it_uses(tmp_path: Path) -> None:
    cell = tmp_path / "c.toml"
    cell.write_text('[cell]\nname = "x"\n[device.s]\ndriver = "sim"\n[device.s.tag.n]\naddress = "counter"\n'
                    'type = "uint32"\n')
    code = (f"import sys; from edged.cell import load_cell; load_cell({str(cell)!r}); "
            "print(sorted(m for m in sys.modules if m.startswith('edged.drivers.') and m.count('.') == 2))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['edged.drivers.sim']"
