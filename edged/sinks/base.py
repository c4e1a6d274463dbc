"""The Sink interface: a consumer of the spool that forwards samples somewhere and acknowledges them."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from prometheus_client import CollectorRegistry

from edged.tag import Tag

if TYPE_CHECKING:
    from edged.spool.spool import Spool


@dataclass(slots=True)
class WriteResult:
    """Outcome of a write requested from upstream or the CLI."""

    ok: bool
    tag: str
    value: Any = None
    old_value: Any = None
    error: str = ""
    quiet: bool = False  # a refusal beyond the refusal rate limit: counted, but neither answered nor logged


# write(tag_key, value, source) -> WriteResult: validates (exists, writable, type, range) and writes
# through the device's driver. Provided by the Runtime.
TagWriter = Callable[[str, Any, str], Awaitable[WriteResult]]


@dataclass(slots=True)
class SinkContext:
    """What a sink gets from the runtime: the cell, its tags, a tag writer and the metrics registry."""

    cell_name: str
    tags: dict[str, Tag]
    write: TagWriter
    registry: CollectorRegistry
    state_dir: Any = None
    current_values: Callable[[], dict[str, tuple[Any, int, int]]] = field(default=lambda: {})


class Sink(abc.ABC):
    """Takes batches from the spool for its own consumer name, forwards them, acks what was delivered."""

    def __init__(self, spec: Any, spool: "Spool", ctx: SinkContext) -> None:
        self.spec = spec
        self.name: str = spec.name
        self.spool = spool
        self.ctx = ctx

    @abc.abstractmethod
    async def run(self) -> None:
        """Forward until cancelled; reconnect with backoff on upstream failures, never raise for them."""

    async def close(self) -> None:
        """Release resources after run() was cancelled (flush, disconnect, publish offline status)."""
        return None
