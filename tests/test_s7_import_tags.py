"""`edged import-tags s7`: TIA Portal exports and CSV lists become TOML tags that `edged check` accepts."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "s7"


def edged(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, cwd=cwd)


def test_tia_export_becomes_tags_with_descriptions_and_check_accepts_them(tmp_path: Path) -> None:
    p = edged("import-tags", "s7", "--tia", str(FIXTURES / "conveyor_db.xml"), "--device", "line1")
    assert p.returncode == 0, p.stderr
    doc = tomllib.loads(p.stdout)
    tags = doc["device"]["line1"]["tag"]
    assert tags["Running"] == {"address": "%DB1.DBX0.0", "description": "Conveyor running"}
    assert tags["Jam"]["address"] == "%DB1.DBX0.1"
    assert tags["Mode"]["address"] == "%DB1.DBB1:BYTE"
    assert tags["Speed"] == {"address": "%DB1.DBD2:REAL", "description": "Belt speed in m/min"}
    assert tags["PartCount"]["address"] == "%DB1.DBD6:DINT"
    assert tags["Recipe"]["address"] == "%DB1.DBB10:STRING[20]"
    assert tags["Motor_Current"]["address"] == "%DB1.DBW32:INT"   # struct members, word aligned
    assert tags["Motor_Fault"]["address"] == "%DB1.DBX34.0"
    assert tags["Motor_Hours"]["address"] == "%DB1.DBD36:UDINT"
    assert tags["ZoneTemps"]["address"] == "%DB1.DBB40:REAL[4]"
    assert tags["LastStop"]["address"] == "%DB1.DBB58:DTL"      # after Array[0..9] of Bool (2 bytes at 56)
    assert tags["ShiftStart"]["address"] == "%DB1.DBD74:TOD"
    # nothing silently dropped: every member is a tag or a comment with the reason
    comments = [line for line in p.stdout.splitlines() if line.startswith("# NOT IMPORTED:")]
    assert any("Sensors" in c and "arrays of Bool" in c for c in comments)
    assert any("Drive" in c and "UDT" in c for c in comments)
    assert any("AfterUdt" in c and "offset unknown" in c for c in comments)
    members = re.findall(r'Member Name="([^"]+)"', (FIXTURES / "conveyor_db.xml").read_text())
    for m in members:
        if m != "Motor":
            assert any(k.endswith(m) for k in tags) or any(f" {m}:" in c for c in comments), m
    cell = tmp_path / "cell.toml"
    cell.write_text('[cell]\nname = "imported"\n[device.line1]\ndriver = "s7"\nhost = "127.0.0.1"\n\n' + p.stdout)
    c = edged("check", "-c", str(cell))
    assert c.returncode == 0, c.stderr
    assert "14 tag(s)" not in c.stdout and "13 tag(s)" in c.stdout


def test_optimized_db_and_csv(tmp_path: Path) -> None:
    p = edged("import-tags", "s7", "--tia", str(FIXTURES / "optimized_db.xml"), "--csv", str(FIXTURES / "tags.csv"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("Optimized block access") == 2
    doc = tomllib.loads(p.stdout)
    tags = doc["device"]["plc"]["tag"]
    assert set(tags) == {"speed", "running", "count", "recipe"}
    assert tags["running"] == {"address": "%DB1.DBX4.0", "description": "Conveyor running"}
    assert "# NOT IMPORTED: weird: data type UDT_X cannot be imported" in p.stdout
    cell = tmp_path / "cell.toml"
    cell.write_text('[cell]\nname = "c"\n[device.plc]\ndriver = "s7"\nhost = "127.0.0.1"\n' + p.stdout)
    assert edged("check", "-c", str(cell)).returncode == 0


def test_usage_errors() -> None:
    assert edged("import-tags", "s7").returncode == 2
    assert edged("import-tags", "nosuch", "--csv", "x.csv").returncode == 2
    bad = edged("import-tags", "s7", "--tia", str(FIXTURES / "tags.csv"))
    assert bad.returncode == 1 and "not an XML file" in bad.stderr and "Traceback" not in bad.stderr


def test_offset_annotated_export_as_python_snap7_reads_it() -> None:
    from snap7.tags import load_tia_xml

    from edged.drivers.s7.tag_import import from_tia_xml
    xml = """<Document><AttributeList><Number>3</Number></AttributeList>
      <Member Name="Temp" Datatype="Real" Offset="10"/>
      <Member Name="Ok" Datatype="Bool" Offset="14.2"/>
      <Member Name="Count" Datatype="Int" Offset="16"/></Document>"""
    lib = load_tia_xml(xml)
    res = from_tia_xml(xml, "x.xml")
    got = {e.name: e.address for e in res.entries}
    assert got == {"Temp": "%DB3.DBD10:REAL", "Ok": "%DB3.DBX14.2", "Count": "%DB3.DBW16:INT"}
    assert (lib["Temp"].db_number, lib["Temp"].byte_offset, lib["Count"].byte_offset) == (3, 10, 16)
