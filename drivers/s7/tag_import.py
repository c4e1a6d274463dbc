"""Tag import for `edged import-tags s7`: TIA Portal DB exports (XML) and CSV tag lists -> TOML tag tables.

TIA comments become descriptions. What cannot be expressed as an edged tag (an optimized DB, a UDT whose
layout the export does not carry, arrays of non-numeric types, ...) is printed as a TOML comment with
the reason, never dropped silently. Offsets: an ``Offset`` attribute when the export has one (the
format python-snap7's ``load_tia_xml`` reads), else computed with the S7 rules for DBs with standard
(not optimized) block access: BOOLs packed into bits, bytes on byte boundaries, everything else, and
every structure, on even bytes.
"""
from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from snap7.tags import load_csv

from .address import AddressError, parse_address
from .types import DEFAULT_STRING_LEN, TYPES, canonical, string_size

_ARRAY = re.compile(r"^Array\s*\[\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*\]\s+of\s+(.+)$", re.IGNORECASE)
_STRING = re.compile(r"^(W?String)(?:\s*\[\s*(\d+)\s*\])?$", re.IGNORECASE)


@dataclass(slots=True)
class Entry:
    """One tag to print, or (address None) a comment saying why it cannot be a tag."""

    name: str
    address: str | None
    description: str = ""
    reason: str = ""


@dataclass(slots=True)
class _Cursor:
    byte: int = 0
    bit: int = 0  # next free bit within ``byte`` after a run of BOOLs (0: none pending)
    known: bool = True
    lost_at: str = ""

    def align_byte(self) -> None:
        if self.bit:
            self.byte, self.bit = self.byte + 1, 0

    def align_word(self) -> None:
        self.align_byte()
        self.byte += self.byte % 2


@dataclass(slots=True)
class Result:
    """The entries found in one export and where they came from."""

    source: str
    db: int | None = None
    db_name: str = ""
    entries: list[Entry] = field(default_factory=list)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _comment(member: ET.Element) -> str:
    for child in member:
        if _local(child.tag) == "Comment":
            texts = [(t.get("Lang", ""), (t.text or "").strip()) for t in child.iter() if _local(t.tag) == "MultiLanguageText"]
            texts = [x for x in texts if x[1]]
            if not texts and (child.text or "").strip():
                return (child.text or "").strip()
            for lang, text in texts:
                if lang.lower().startswith("en"):
                    return text
            return texts[0][1] if texts else ""
    return ""


def tag_name(path: list[str]) -> str:
    """An edged tag name for a member path: ``Motor.Speed`` -> ``Motor_Speed``; other characters become ``_``."""
    raw = "_".join(path)
    name = re.sub(r"[^A-Za-z0-9_-]", "_", raw)
    return name if name and name[0] != "-" else f"_{name}"


def _elem_size(s7type: str, strlen: int) -> int:
    return string_size(s7type, strlen) if s7type in ("STRING", "WSTRING") else TYPES[s7type].size


def _scalar_type(text: str) -> tuple[str, int] | None:
    """``Real`` -> (REAL, 0); ``String[20]`` -> (STRING, 20); None when not an elementary type."""
    m = _STRING.match(text.strip())
    if m:
        return m[1].upper(), int(m[2]) if m[2] else DEFAULT_STRING_LEN
    name = canonical(text)
    if name is None or name in ("TIMER", "COUNTER"):
        return None
    return name, 0


def _address(db: int, s7type: str, byte: int, bit: int, strlen: int = 0, count: int = 1) -> str:
    if s7type == "BOOL":
        return f"%DB{db}.DBX{byte}.{bit}"
    base = f"{s7type}[{strlen}]" if s7type in ("STRING", "WSTRING") else s7type
    size = _elem_size(s7type, strlen)
    width = {1: "B", 2: "W", 4: "D"}.get(size, "B") if count == 1 else "B"
    return f"%DB{db}.DB{width}{byte}:{base}" + (f"[{count}]" if count > 1 else "")


def _walk(members: list[ET.Element], path: list[str], db: int, cur: _Cursor, out: list[Entry]) -> None:
    for m in members:
        name = m.get("Name", "")
        dtype = (m.get("Datatype") or "").strip()
        here = path + [name]
        pretty = ".".join(here)
        desc = _comment(m)
        children = [c for c in m if _local(c.tag) == "Member"]
        if m.get("Offset") is not None:
            try:
                off = float(m.get("Offset", ""))
            except ValueError:
                off = -1
            if off >= 0:
                cur.byte, cur.bit, cur.known = int(off), round((off - int(off)) * 10), True
        if dtype.lower() == "struct" or (children and not _ARRAY.match(dtype)):
            cur.align_word()
            _walk(children, here, db, cur, out)
            cur.align_word()
            continue
        arr = _ARRAY.match(dtype)
        if arr:
            lo, hi, elem = int(arr[1]), int(arr[2]), arr[3].strip()
            count = hi - lo + 1
            st = _scalar_type(elem)
            cur.align_word()
            start = cur.byte
            if st is None or count < 1:
                out.append(Entry(tag_name(here), None, desc, f"{pretty}: {dtype}: arrays of structures or UDTs are "
                                                              "not tags; import their elements one by one"))
                cur.known, cur.lost_at = False, cur.lost_at or pretty
                continue
            s7type, strlen = st
            if s7type == "BOOL":
                size = (count + 7) // 8
                out.append(Entry(tag_name(here), None, desc, f"{pretty}: {dtype}: arrays of Bool are not tags "
                                                              f"(packed bits); address the bits one by one, e.g. "
                                                              f"%DB{db}.DBX{start}.0" if cur.known else
                                                              f"{pretty}: {dtype}: arrays of Bool are not tags"))
            elif not TYPES[s7type].array_ok:
                size = _elem_size(s7type, strlen) * count
                out.append(Entry(tag_name(here), None, desc, f"{pretty}: {dtype}: arrays are supported for the "
                                                              "numeric types only"))
            else:
                size = _elem_size(s7type, strlen) * count
                _emit(out, here, desc, db, cur, s7type, start, 0, strlen, count)
            cur.byte = start + size
            cur.align_word()
            continue
        st = _scalar_type(dtype)
        if st is None:
            out.append(Entry(tag_name(here), None, desc,
                             f"{pretty}: data type {dtype or '(none)'} cannot be imported"
                             + (" (a UDT: the export does not carry its layout; export the UDT's members, or "
                                "address them by hand)" if dtype.startswith('"') else "")))
            cur.known, cur.lost_at = False, cur.lost_at or pretty
            continue
        s7type, strlen = st
        if s7type == "BOOL":
            _emit(out, here, desc, db, cur, "BOOL", cur.byte, cur.bit, 0, 1)
            cur.bit += 1
            if cur.bit == 8:
                cur.byte, cur.bit = cur.byte + 1, 0
            continue
        size = _elem_size(s7type, strlen)
        if size == 1:
            cur.align_byte()
        else:
            cur.align_word()
        _emit(out, here, desc, db, cur, s7type, cur.byte, 0, strlen, 1)
        cur.byte += size


def _emit(out: list[Entry], path: list[str], desc: str, db: int, cur: _Cursor, s7type: str, byte: int, bit: int,
          strlen: int, count: int) -> None:
    pretty = ".".join(path)
    if not cur.known:
        out.append(Entry(tag_name(path), None, desc, f"{pretty}: offset unknown after {cur.lost_at} "
                                                      "(whose size the export does not give)"))
        return
    addr = _address(db, s7type, byte, bit, strlen, count)
    try:
        parse_address(addr)
    except AddressError as exc:
        out.append(Entry(tag_name(path), None, desc, f"{pretty}: {exc}"))
        return
    out.append(Entry(tag_name(path), addr, desc))


def from_tia_xml(text: str, source: str = "") -> Result:
    """Entries of a TIA Portal DB export (Openness XML, or the ``Offset``-annotated form load_tia_xml reads)."""
    root = ET.fromstring(text)
    res = Result(source)
    layout = ""
    for el in root.iter():
        tag = _local(el.tag)
        if tag == "Number" and res.db is None and (el.text or "").strip().isdigit():
            res.db = int((el.text or "").strip())
        elif tag == "Name" and not res.db_name and el.text and len(list(el)) == 0:
            res.db_name = el.text.strip()
        elif tag == "MemoryLayout" and el.text:
            layout = el.text.strip()
    sections = [el for el in root.iter() if _local(el.tag) == "Section"]
    if sections:
        members = [m for s in sections if s.get("Name", "Static") in ("Static", "")
                   for m in s if _local(m.tag) == "Member"]
    else:  # no Sections: take the top-level members (the simple form python-snap7's load_tia_xml reads)
        inner = {id(c) for el in root.iter() if _local(el.tag) == "Member" for c in el}
        members = [el for el in root.iter() if _local(el.tag) == "Member" and id(el) not in inner]
    if res.db is None:
        res.entries.append(Entry("(db)", None, "", "the export names no DB number (<Number>): nothing imported"))
        return res
    if layout.lower() == "optimized":
        flat: list[Entry] = []
        _walk(members, [], res.db, _Cursor(), flat)
        for e in flat:
            res.entries.append(Entry(e.name, None, e.description,
                                     f"{e.name}: DB{res.db} has optimized block access, so no absolute address: "
                                     "untick 'Optimized block access' in the DB's properties (Attributes) and "
                                     "export again"))
        return res
    _walk(members, [], res.db, _Cursor(), res.entries)
    return res


def from_csv(text: str, source: str = "") -> Result:
    """Entries of a CSV tag list with the columns python-snap7's load_csv reads: tag, db, offset, type[, bit][, comment]."""
    res = Result(source)
    rows = list(csv.DictReader(io.StringIO(text)))
    try:
        lib_tags = load_csv(text if "\n" in text else text + "\n")
    except (KeyError, ValueError) as exc:
        res.entries.append(Entry("(file)", None, "", f"not a tag CSV (columns tag, db, offset, type): {exc}"))
        return res
    for row in rows:
        name = (row.get("tag") or "").strip()
        desc = (row.get("comment") or row.get("description") or "").strip()
        t = lib_tags.get(name)
        if t is None:
            continue
        st = _scalar_type(t.datatype)
        count = 1
        if st is None:
            m = re.match(r"^(\w+)\[(\d+)\]$", t.datatype.strip())
            st = _scalar_type(m[1]) if m else None
            count = int(m[2]) if m and st else 1
        if st is None:
            res.entries.append(Entry(tag_name([name]), None, desc, f"{name}: data type {t.datatype} cannot be imported"))
            continue
        cur = _Cursor(t.byte_offset, 0)
        _emit(res.entries, [name], desc, t.db_number, cur, st[0], t.byte_offset, t.bit, st[1], count)
    return res


def to_toml(results: list[Result], device: str) -> str:
    """The TOML snippet: a commented device table, one tag table per entry, comments for the others."""
    lines = [f"# S7 tags imported by `edged import-tags s7`; paste them into the cell under device {device!r}.",
             f"# [device.{device}]", '# driver = "s7"', '# host = "192.168.0.10"', ""]
    seen: set[str] = set()
    for res in results:
        ok = [e for e in res.entries if e.address]
        bad = [e for e in res.entries if not e.address]
        where = f"DB{res.db}" + (f" \"{res.db_name}\"" if res.db_name else "") if res.db is not None else "?"
        lines.append(f"# from {res.source}: {where}: {len(ok)} tag(s)"
                     + (f", {len(bad)} not importable (commented below)" if bad else ""))
        for e in res.entries:
            if e.address is None:
                lines.append(f"# NOT IMPORTED: {e.reason}")
                continue
            name, k = e.name, 2
            while name in seen:
                name, k = f"{e.name}_{k}", k + 1
            seen.add(name)
            lines.append(f"[device.{device}.tag.{name}]")
            lines.append(f"address = {json.dumps(e.address)}")
            if e.description:
                lines.append(f"description = {json.dumps(e.description, ensure_ascii=False)}")
            lines.append("")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def import_files(tia: list[str], csv_files: list[str], device: str) -> str:
    """Read the given exports and return the TOML snippet (OSError / ValueError for unreadable files)."""
    results = []
    for path in tia:
        try:
            results.append(from_tia_xml(Path(path).read_text(encoding="utf-8-sig"), path))
        except ET.ParseError as exc:
            raise ValueError(f"{path}: not an XML file: {exc}") from None
    for path in csv_files:
        results.append(from_csv(Path(path).read_text(encoding="utf-8-sig"), path))
    return to_toml(results, device)
