"""The Sparkplug edge-node logic without a broker: births, seq, bdSeq persistence, historical flag, commands."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from test_sparkplug_wire import BOOLEAN, DOUBLE, FLOAT, INT16, STRING, UINT64, decode_payload, encode_command

from edged.sinks.sparkplug_node import TAG_ALIAS_BASE, BdSeqStore, EdgeNode
from edged.tag import Access, DataType, Sample, Tag

T0 = 1_700_000_000_000_000_000


def _tags() -> list[Tag]:
    return [
        Tag("press1", "oil_temp", "hr:0", DataType.INT16, "default", None, scale=0.1, slot=0),
        Tag("press1", "count", "hr:1", DataType.INT16, "default", None, slot=1),
        Tag("press1", "setpoint", "hr:2", DataType.INT16, "default", None, access=Access.WRITE, slot=2),
        Tag("robot", "state", "x", DataType.STRING, "default", None, slot=3),
        Tag("robot", "enable", "y", DataType.BOOL, "default", None, access=Access.WRITE, slot=4),
    ]


def test_births_carry_every_metric_with_name_alias_type_and_value() -> None:
    node = EdgeNode("plant", "cell1", _tags())
    values = {"press1.oil_temp": (41.5, 0, T0 - 5_000_000), "press1.count": (-3, 0, T0),
              "robot.state": ("idle", 1, T0)}
    out = node.births(7, values, now_ns=T0)
    assert [(o.kind, o.topic) for o in out] == [
        ("NBIRTH", "spBv1.0/plant/NBIRTH/cell1"),
        ("DBIRTH", "spBv1.0/plant/DBIRTH/cell1/press1"),
        ("DBIRTH", "spBv1.0/plant/DBIRTH/cell1/robot"),
    ]
    nb = decode_payload(out[0].payload)
    assert nb.seq == 0
    assert nb.by_name()["bdSeq"].value == 7 and nb.by_name()["bdSeq"].datatype == UINT64
    rebirth = nb.by_name()["Node Control/Rebirth"]
    assert (rebirth.datatype, rebirth.value) == (BOOLEAN, False)
    press = decode_payload(out[1].payload)
    assert press.seq == 1
    m = press.by_name()
    assert (m["oil_temp"].alias, m["oil_temp"].datatype, m["oil_temp"].value) == (TAG_ALIAS_BASE, DOUBLE, 41.5)
    assert m["oil_temp"].timestamp == (T0 - 5_000_000) // 1_000_000
    assert (m["count"].datatype, m["count"].value) == (INT16, -3)
    assert m["setpoint"].is_null and m["setpoint"].properties == {"Quality": 0}  # no value yet: null, bad
    robot = decode_payload(out[2].payload)
    assert robot.seq == 2
    st = robot.by_name()["state"]
    assert (st.datatype, st.value, st.properties) == (STRING, "idle", {"Quality": 64})


def test_data_flags_samples_from_before_the_births_as_historical_in_time_order() -> None:
    node = EdgeNode("plant", "cell1", _tags())
    node.births(0, {}, now_ns=T0)
    samples = [Sample(T0 - 2_000_000, "press1", "count", 1, 0), Sample(T0 - 1_000_000, "press1", "count", 2, 0),
               Sample(T0 + 1_000_000, "robot", "enable", True, 0), Sample(T0 + 2_000_000, "press1", "count", 3, 0),
               Sample(T0 + 3_000_000, "gone", "tag", 1, 0)]
    out, stats = node.data(samples)
    assert (stats.live, stats.historical, stats.unknown) == (2, 2, 1)
    assert [o.topic for o in out] == ["spBv1.0/plant/DDATA/cell1/press1", "spBv1.0/plant/DDATA/cell1/robot"]
    press = decode_payload(out[0].payload)
    assert press.seq == 3  # NBIRTH 0, DBIRTH 1, 2
    assert [(m.alias, m.value, m.is_historical) for m in press.metrics] == [
        (TAG_ALIAS_BASE + 1, 1, True), (TAG_ALIAS_BASE + 1, 2, True), (TAG_ALIAS_BASE + 1, 3, False)]
    assert all(m.name is None for m in press.metrics)  # DATA messages use aliases only
    assert [m.timestamp for m in press.metrics] == sorted(m.timestamp for m in press.metrics)


def test_seq_wraps_after_255_and_births_reset_it() -> None:
    node = EdgeNode("g", "n", _tags(), max_metrics_per_message=1)
    node.births(0, {}, now_ns=T0)  # seq 0, 1, 2
    seqs = []
    for i in range(300):
        out, _ = node.data([Sample(T0 + i, "press1", "count", i, 0)])
        seqs += [decode_payload(o.payload).seq for o in out]
    assert seqs[:3] == [3, 4, 5]
    assert seqs[252] == 255 and seqs[253] == 0 and seqs[254] == 1
    out = node.births(0, {}, now_ns=T0 + 10**9)
    assert [decode_payload(o.payload).seq for o in out] == [0, 1, 2]


def test_large_batches_are_chunked() -> None:
    node = EdgeNode("g", "n", _tags(), max_metrics_per_message=100)
    node.births(0, {}, now_ns=T0)
    out, stats = node.data([Sample(T0 + i, "press1", "count", i % 100, 0) for i in range(250)])
    assert [o.metrics for o in out] == [100, 100, 50]
    assert [decode_payload(o.payload).seq for o in out] == [3, 4, 5]


def test_death_payload_carries_the_bdseq_and_no_seq() -> None:
    node = EdgeNode("g", "n", _tags())
    nd = decode_payload(node.death_payload(42))
    assert nd.seq is None
    assert nd.by_name()["bdSeq"].value == 42


def test_bdseq_store_increments_across_instances_and_wraps(tmp_path: Path) -> None:
    path = tmp_path / "sp" / "bdseq"
    assert BdSeqStore(path).next() == 0
    assert BdSeqStore(path).next() == 1
    path.write_text("255\n")
    assert BdSeqStore(path).next() == 0
    path.write_text("garbage")
    assert BdSeqStore(path).next() == 0
    assert BdSeqStore(path).last() == 0


def test_commands_resolve_names_and_aliases_and_refuse_the_rest() -> None:
    node = EdgeNode("g", "n", _tags())
    cmds = node.parse_command("spBv1.0/g/NCMD/n", encode_command([("Node Control/Rebirth", None, BOOLEAN, True)]))
    assert [c.kind for c in cmds] == ["rebirth"]
    cmds = node.parse_command("spBv1.0/g/NCMD/n", encode_command([(None, 1, BOOLEAN, True),
                                                                 ("Node Control/Reboot", None, BOOLEAN, True)]))
    assert [c.kind for c in cmds] == ["rebirth", "refused"]
    (no,) = node.parse_command("spBv1.0/g/NCMD/n", encode_command([("Node Control/Rebirth", None, BOOLEAN, False)]))
    assert (no.kind, no.code) == ("refused", "invalid_value")
    assert node.parse_command("spBv1.0/g/NCMD/other", b"")[0].code == "unknown_device"  # not our node
    cmds = node.parse_command("spBv1.0/g/DCMD/n/press1", encode_command([
        ("setpoint", None, INT16, -20), (None, TAG_ALIAS_BASE + 2, INT16, 33), ("nope", None, INT16, 1),
        (None, TAG_ALIAS_BASE + 4, BOOLEAN, True)]))  # alias of robot.enable on press1: refused
    assert [(c.kind, c.tag.key if c.tag else None, c.value) for c in cmds] == [
        ("write", "press1.setpoint", -20), ("write", "press1.setpoint", 33), ("refused", None, None),
        ("refused", None, None)]
    assert node.parse_command("spBv1.0/g/DCMD/n/ghost", encode_command([("x", None, INT16, 1)]))[0].kind == "refused"
    bad = node.parse_command("spBv1.0/g/DCMD/n/press1", b"\xff\xff\xff")
    assert bad[0].kind == "refused" and "malformed" in bad[0].reason


def test_node_info_is_born_and_sent_by_ndata_only_when_it_changes() -> None:
    node = EdgeNode("g", "n", _tags())
    info = {"Node Info/Version": "1.2.3", "Node Info/Spool Backlog": 10, "Node Info/Samples Lost": 0}
    out = node.births(0, {}, now_ns=T0, node_values=info)
    nb = decode_payload(out[0].payload).by_name()
    assert [(nb[k].alias, nb[k].value) for k in info] == [(2, "1.2.3"), (3, 10), (4, 0)]
    assert nb["Node Info/Spool Backlog"].datatype == UINT64
    assert node.node_data(info) is None
    msg = node.node_data({**info, "Node Info/Spool Backlog": 0})
    assert msg is not None and msg.topic == "spBv1.0/g/NDATA/n"
    p = decode_payload(msg.payload)
    assert p.seq == 3  # NBIRTH, 2 DBIRTHs
    assert [(m.name, m.alias, m.value) for m in p.metrics] == [(None, 3, 0)]
    assert node.node_data({**info, "Node Info/Spool Backlog": 0}) is None


def test_samples_of_keys_that_are_no_tag_become_learned_metrics_born_with_their_latest_value() -> None:
    node = EdgeNode("g", "n", _tags())
    node.births(0, {}, now_ns=T0)
    control = [Sample(T0 + 1, "fast", "pid1.out", 12.5, 0), Sample(T0 + 2, "fast", "pid1.out", 13.5, 0),
               Sample(T0 + 3, "fast", "alarm.q", True, 0), Sample(T0 + 4, "press1", "count", 4, 0)]
    assert node.learn(control) == ["fast.pid1.out", "fast.alarm.q"]
    assert node.learn(control) == []
    out = node.births(0, {}, now_ns=T0 + 10)
    fast = decode_payload(out[-1].payload)
    assert out[-1].topic == "spBv1.0/g/DBIRTH/n/fast"
    m = fast.by_name()
    assert (m["pid1.out"].alias, m["pid1.out"].datatype, m["pid1.out"].value) == (TAG_ALIAS_BASE + 5, DOUBLE, 13.5)
    assert (m["alarm.q"].datatype, m["alarm.q"].value) == (BOOLEAN, True)
    data, stats = node.data([Sample(T0 + 20, "fast", "pid1.out", 14.0, 0)])
    assert stats.unknown == 0 and stats.live == 1
    assert [(x.alias, x.value) for x in decode_payload(data[0].payload).metrics] == [(TAG_ALIAS_BASE + 5, 14.0)]
    # a learned metric is read-only: a DCMD naming it resolves, and the CommandGate refuses it (unknown tag)
    (cmd,) = node.parse_command("spBv1.0/g/DCMD/n/fast", encode_command([("pid1.out", None, DOUBLE, 1.0)]))
    assert cmd.kind == "write" and not cmd.tag.writable


def test_a_value_that_does_not_fit_its_type_is_sent_as_bad_null_and_counted(caplog) -> None:  # noqa: ANN001
    node = EdgeNode("g", "n", _tags())
    node.births(0, {}, now_ns=T0)
    out, stats = node.data([Sample(T0 + 1, "press1", "count", 70000, 0), Sample(T0 + 2, "press1", "count", 2.5, 0),
                            Sample(T0 + 3, "press1", "count", 7, 0)])
    assert stats.unencodable == 2 and stats.live == 3
    metrics = decode_payload(out[0].payload).metrics
    assert [(m.value, m.is_null, m.properties) for m in metrics] == [
        (None, True, {"Quality": 0}), (None, True, {"Quality": 0}), (7, False, {})]
    assert sum("cannot encode" in r.message for r in caplog.records) == 1  # once per metric


def test_bdseq_goes_on_in_memory_when_the_state_dir_is_not_writable(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = BdSeqStore(blocker / "sparkplug" / "s.bdseq")  # its parent can never be created
    assert [store.next() for _ in range(3)] == [0, 1, 2]
    assert sum("cannot store the Sparkplug bdSeq" in r.message for r in caplog.records) == 1


# -- a changed cell (reload): the births the change needs, and only those --------------------------------------
def _reloaded(*changes: Tag, drop: tuple[str, ...] = ()) -> list[Tag]:
    """The cell's tags as a reload hands them over: fresh Tag objects, slots moved, some replaced or dropped."""
    tags = {t.key: dataclasses.replace(t, address=t.address + "'", slot=t.slot + 100) for t in _tags()}
    for t in changes:
        tags[t.key] = t
    return [t for k, t in tags.items() if k not in drop]


def test_a_connection_only_change_needs_no_birth_and_keeps_every_alias() -> None:
    node = EdgeNode("g", "n", _tags())
    node.births(0, {}, now_ns=T0)
    before = dict(node.aliases)
    change = node.change_cell(_reloaded())  # other addresses and slots, same names and types
    assert change.empty and change.describe() == []
    assert node.aliases == before
    out, _ = node.data([Sample(T0 + 1, "press1", "count", 5, 0)])
    assert decode_payload(out[0].payload).seq == 3  # nothing was used up by the change


def test_a_changed_device_is_reborn_alone_with_the_aliases_of_its_unchanged_metrics() -> None:
    node = EdgeNode("g", "n", _tags())
    node.births(0, {}, now_ns=T0)
    node.learn([Sample(T0 + 1, "fast", "pid1.out", 1.5, 0)])  # a control output: alias TAG_ALIAS_BASE + 5
    old = dict(node.aliases)
    change = node.change_cell(_reloaded(
        Tag("press1", "count", "hr:1", DataType.FLOAT32, "default", None, slot=200),  # retyped
        Tag("press1", "new", "hr:9", DataType.INT16, "default", None, slot=201),  # added
        drop=("press1.setpoint",)))  # removed
    assert (change.births, change.deaths) == ({"press1"}, set())
    assert change.describe() == ["DBIRTH press1"]
    assert node.aliases["press1.oil_temp"] == old["press1.oil_temp"]
    assert node.aliases["robot.state"] == old["robot.state"] and node.aliases["fast.pid1.out"] == old["fast.pid1.out"]
    fresh = {node.aliases["press1.count"], node.aliases["press1.new"]}
    assert len(fresh) == 2 and min(fresh) > max(old.values())  # never an alias the host knew for another metric
    msg = node.device_birth("press1", {"press1.count": (2.5, 0, T0 + 5)}, now_ns=T0 + 10)
    assert (msg.kind, msg.topic) == ("DBIRTH", "spBv1.0/g/DBIRTH/n/press1")
    db = decode_payload(msg.payload)
    assert db.seq == 3  # NBIRTH 0, DBIRTH 1, 2: the seq goes on, no NBIRTH
    m = db.by_name()
    assert set(m) == {"oil_temp", "count", "new"}
    assert (m["count"].alias, m["count"].datatype, m["count"].value) == (node.aliases["press1.count"], FLOAT, 2.5)
    assert m["oil_temp"].alias == old["press1.oil_temp"]
    # samples acquired before the device's new birth are historical; other devices' are live
    out, stats = node.data([Sample(T0 + 8, "press1", "count", 2.0, 0), Sample(T0 + 8, "robot", "state", "x", 0),
                            Sample(T0 + 8, "press1", "setpoint", 3, 0)])
    assert (stats.historical, stats.live, stats.unknown) == (1, 1, 1)  # the removed tag's sample is dropped
    assert [decode_payload(o.payload).seq for o in out] == [4, 5]
    assert node.learn([Sample(T0 + 9, "press1", "setpoint", 3, 0)]) == []  # ... and not learned back
    # a removed metric's alias is not reused: add it back, it gets a new one
    node.change_cell(_reloaded(Tag("press1", "count", "hr:1", DataType.FLOAT32, "default", None, slot=200),
                               Tag("press1", "new", "hr:9", DataType.INT16, "default", None, slot=201)))
    assert node.aliases["press1.setpoint"] > max(fresh) and node.aliases["press1.new"] in fresh


def test_an_added_device_gets_a_dbirth_and_a_removed_one_a_ddeath() -> None:
    node = EdgeNode("g", "n", _tags())
    node.births(0, {}, now_ns=T0)
    change = node.change_cell(_reloaded(Tag("oven", "temp", "t", DataType.FLOAT64, "default", None, slot=300),
                                        drop=("robot.state", "robot.enable")))
    assert (change.births, change.deaths) == ({"oven"}, {"robot"})
    assert change.describe() == ["DDEATH robot", "DBIRTH oven"]
    death = node.device_death("robot", now_ns=T0 + 1)
    assert death is not None and (death.kind, death.topic) == ("DDEATH", "spBv1.0/g/DDEATH/n/robot")
    dd = decode_payload(death.payload)
    assert (dd.seq, dd.metrics, dd.timestamp) == (3, [], (T0 + 1) // 1_000_000)
    assert node.device_death("robot") is None  # dead already: nothing to say twice
    birth = decode_payload(node.device_birth("oven", {"oven.temp": (180.0, 0, T0)}, now_ns=T0 + 2).payload)
    assert birth.seq == 4 and birth.by_name()["temp"].value == 180.0
    (cmd,) = node.parse_command("spBv1.0/g/DCMD/n/robot", encode_command([("enable", None, BOOLEAN, True)]))
    assert cmd.code == "unknown_device"
    # before the node is born there is nothing to retract (its first births declare everything)
    unborn = EdgeNode("g", "n", _tags())
    assert unborn.change_cell(_reloaded(drop=("robot.state", "robot.enable"))).deaths == {"robot"}
    assert unborn.device_death("robot") is None
