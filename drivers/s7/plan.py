"""Request planning: the library's optimizer merges a scan group's tags into blocks and packs them into PDU-sized reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from snap7.optimizer import ReadItem, merge_items, packetize, sort_items
from snap7.type import Area

from edged.tag import Tag

from .address import AREA_LETTER, S7Address
from .codec import decoder
from .wire import ITEM_RESPONSE_HEADER, ITEM_SPEC_LEN, REQUEST_OVERHEAD, RESPONSE_OVERHEAD, WL_BYTE, WL_COUNTER, \
    WL_TIMER, ItemSpec

DEFAULT_PDU = 480
MIN_PDU = 240
MAX_PDU = 960
DEFAULT_MAX_ITEMS = 20   # items per read request most S7 CPUs accept (snap7's MaxVars)
DEFAULT_MAX_GAP = 5      # unused bytes worth reading to merge two tags into one block (the library's default)


def max_item_bytes(pdu_size: int) -> int:
    """Most data bytes one item of a one-item read may carry at a PDU size."""
    return pdu_size - RESPONSE_OVERHEAD - ITEM_RESPONSE_HEADER


@dataclass(slots=True)
class Block:
    """One item of a read request: a contiguous range of one area, and the tags decoded from it."""

    spec: ItemSpec
    entries: list[tuple[Tag, int, Callable[[Any, int], Any]]] = field(default_factory=list)

    @property
    def tags(self) -> list[Tag]:
        """The tags this block covers."""
        return [e[0] for e in self.entries]

    def describe(self) -> str:
        """``DB1.DBB0..DBB11`` or ``T5``."""
        s = self.spec
        if s.wordlen in (WL_TIMER, WL_COUNTER):
            return f"{AREA_LETTER[Area(s.area)]}{s.start}" + (f"..{s.start + s.count - 1}" if s.count > 1 else "")
        p = f"DB{s.db}.DBB" if s.area == Area.DB else f"{AREA_LETTER[Area(s.area)]}B"
        return f"{p}{s.start}" + (f"..{p.split('.')[-1]}{s.start + s.count - 1}" if s.count > 1 else "")


@dataclass(slots=True)
class Packet:
    """One read request (one PDU exchange) of several blocks."""

    blocks: list[Block]

    @property
    def items(self) -> list[ItemSpec]:
        """The item specifications of the request, in order."""
        return [b.spec for b in self.blocks]

    @property
    def tags(self) -> list[Tag]:
        """Every tag this request covers."""
        return [t for b in self.blocks for t in b.tags]

    def request_bytes(self) -> int:
        """Size of the request PDU."""
        return REQUEST_OVERHEAD + ITEM_SPEC_LEN * len(self.blocks)

    def response_bytes(self) -> int:
        """Size of the response PDU as the optimizer budgets it."""
        return RESPONSE_OVERHEAD + sum(ITEM_RESPONSE_HEADER + b.spec.byte_length + b.spec.byte_length % 2
                                       for b in self.blocks)

    def describe(self, pdu_size: int) -> str:
        """One line for ``edged check --plan``."""
        parts = "; ".join(f"{b.describe()} ({', '.join(t.name for t in b.tags)})" for b in self.blocks)
        return (f"{len(self.blocks)} item(s), {self.response_bytes()}/{pdu_size} reply bytes: {parts}")


def build_plan(tags: list[Tag], pdu_size: int, max_gap: int = DEFAULT_MAX_GAP,
               max_items: int = DEFAULT_MAX_ITEMS) -> list[Packet]:
    """Pack tags into as few read requests as the PDU size allows (tags larger than one PDU item are left out)."""
    limit = max_item_bytes(pdu_size)
    items: list[ReadItem] = []
    for i, tag in enumerate(tags):
        a: S7Address = tag.addr
        if a.size > limit:
            continue
        items.append(ReadItem(area=int(a.area), db_number=a.db if a.area is Area.DB else 0, byte_offset=a.byte,
                              bit_offset=0, byte_length=a.size, index=i))
    blocks = merge_items(sort_items(items), max_gap=max_gap, max_block_size=limit)
    # the library packs by PDU budget; re-pack its blocks in the same order with the item limit as well
    out: list[Packet] = []
    current: list[Block] = []
    for pkt in packetize(blocks, pdu_size):
        for blk in pkt.blocks:
            block = _block(blk, tags)
            if current and (len(current) >= max_items or Packet(current + [block]).request_bytes() > pdu_size
                            or Packet(current + [block]).response_bytes() > pdu_size):
                out.append(Packet(current))
                current = []
            current.append(block)
    if current:
        out.append(Packet(current))
    return out


def oversized(tags: list[Tag], pdu_size: int) -> list[Tag]:
    """Tags too large for one read item at this PDU size."""
    limit = max_item_bytes(pdu_size)
    return [t for t in tags if t.addr.size > limit]


def _block(blk: Any, tags: list[Tag]) -> Block:
    area = Area(blk.area)
    if area in (Area.TM, Area.CT):
        spec = ItemSpec(int(area), 0, blk.start_offset, blk.byte_length // 2, WL_TIMER if area is Area.TM else WL_COUNTER)
    else:
        spec = ItemSpec(int(area), blk.db_number, blk.start_offset, blk.byte_length, WL_BYTE)
    block = Block(spec)
    for item in blk.items:
        tag = tags[item.index]
        local = (item.byte_offset - blk.start_offset) * (2 if area in (Area.TM, Area.CT) else 1)
        block.entries.append((tag, local, decoder(tag.addr)))
    return block
