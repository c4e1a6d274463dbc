"""The mosquitto test fixture itself: starts, restarts with persistent sessions, and enforces TLS client certs."""
from __future__ import annotations

import ssl
import paho.mqtt.client as mqtt
from mosquitto_support import Broker, Collector, mosquitto, mosquitto_tls  # noqa: F401


def _publish(port: int, topic: str, payloads: list[bytes], **tls: str) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-pub", protocol=mqtt.MQTTv311)
    if tls:
        client.tls_set(**tls)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=20)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def _refused_without_certificate(port: int, ca: str) -> bool:
    """Open TLS without a client certificate, send CONNECT; True when the broker aborts the session."""
    import socket

    ctx = ssl.create_default_context(cafile=ca)
    connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 10, 0, 0])  # MQTT 3.1.1, empty client id
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(connect)
                return tls.recv(4) == b""  # a CONNACK here would mean the broker accepted us
        except (ssl.SSLError, ConnectionError):
            return True


def test_broker_delivers_and_keeps_queued_messages_across_restart(mosquitto: Broker) -> None:
    col = Collector(mosquitto, "t/#", client_id="support-col").start()
    _publish(mosquitto.port, "t/a", [b"1"])
    assert col.wait_for(lambda m: len(m) == 1, timeout=20)
    col.stop()
    _publish(mosquitto.port, "t/a", [b"2", b"3"])  # queued for the offline persistent session
    mosquitto.restart()
    col2 = Collector(mosquitto, "t/#", client_id="support-col").start()
    try:
        assert col2.wait_for(lambda m: [x.payload for x in m] == [b"2", b"3"], timeout=30), col2.snapshot()
    finally:
        col2.stop()


def test_tls_listener_requires_client_certificate(mosquitto_tls: Broker) -> None:
    pki = mosquitto_tls.pki
    assert pki is not None and mosquitto_tls.tls_port
    col = Collector(mosquitto_tls, "s/#", client_id="tls-col").start()
    try:
        _publish(mosquitto_tls.tls_port, "s/x", [b"ok"], ca_certs=str(pki.ca_cert),
                 certfile=str(pki.client_cert), keyfile=str(pki.client_key))
        assert col.wait_for(lambda m: [x.payload for x in m] == [b"ok"], timeout=20)
        assert _refused_without_certificate(mosquitto_tls.tls_port, str(pki.ca_cert))
        assert [x.payload for x in col.snapshot()] == [b"ok"]
    finally:
        col.stop()
