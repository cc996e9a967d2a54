"""Hemis source config, destinations, endpoint, token source, keys and envelopes (no sockets)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from producers.envelope import decode_envelope, encode_envelope
from producers.errors import SourceConfigError
from producers.sources.hemis import (
    KIND,
    HemisSource,
    build_envelope,
    credentials_provider,
    destinations,
    endpoint,
    frame_key,
    stomp_options,
)
from producers.transports.stomp import StompCredentials, StompEndpoint, StompMessage
from tests.support.secrets import register_secret

TOKEN = register_secret("eyJhbGciOiJIUzI1NiJ9.hemis-token.sig")
URL = "wss://somename-stomp.eu-west.ubiant.io:4443"


def source(**overrides: Any) -> HemisSource:
    values: dict[str, Any] = {
        "name": "hemis-home",
        "kind": "hemis",
        "url": URL,
        "building_id": "BLD-1",
        "token": TOKEN,
    }
    values.update(overrides)
    return HemisSource(**values)


def errors(**overrides: Any) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        source(**overrides)
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


# --- config ------------------------------------------------------------------------------------


def test_defaults_follow_the_known_hemis_clients() -> None:
    src = source()
    assert src.heartbeat_send_ms == src.heartbeat_receive_ms == 20_000
    assert src.subprotocols == ("v12.stomp", "v11.stomp", "v10.stomp")
    assert destinations(src) == ("jms.topic.BLD-1.data", "jms.topic.BLD-1.management")
    assert TOKEN not in repr(src)
    assert TOKEN not in str(src.model_dump())


def test_token_or_token_file_exactly_one() -> None:
    both = errors(token_file="/run/secrets/t")
    neither = errors(token=None)
    message = "give exactly one of token (e.g. token: ${HEMIS_TOKEN}) or token_file"
    assert len(both) == 1 and message in both[0][1]
    assert len(neither) == 1 and message in neither[0][1]


@pytest.mark.parametrize(
    ("overrides", "loc", "text"),
    [
        ({"url": "https://h/"}, ("url",), "is not a WebSocket URL"),
        ({"url": f"{URL}/?passcode=x"}, ("url",), "must not carry a query string"),
        ({"url": "wss://user:pw@h/"}, ("url",), "must not carry a query string, fragment or user"),
        ({"url": "wss://h:99999/"}, ("url",), "has an invalid port"),
        ({"local_ip": "hemis.local"}, ("local_ip",), "is not an IP address"),
        ({"ping_interval": 20}, ("ping_interval",), "STOMP heart-beats keep the connection alive"),
        ({"heartbeat_send_ms": 1.5}, ("heartbeat_send_ms",), "valid integer"),
        ({"heartbeat_send_ms": True}, ("heartbeat_send_ms",), "valid integer"),
        ({"heartbeat_receive_ms": -1}, ("heartbeat_receive_ms",), "greater than or equal to 0"),
        ({"building_id": "a b"}, ("building_id",), "should match pattern"),
        ({"destination_style": "artemis"}, ("destination_style",), "'hemis' or 'rabbitmq'"),
        ({"local_port": 0}, ("local_port",), "greater than or equal to 1"),
        ({"max_pending": 0}, ("max_pending",), "greater than or equal to 1"),
        ({"extra": 1}, ("extra",), "Extra inputs are not permitted"),
    ],
)
def test_invalid_entries_name_the_key(
    overrides: dict[str, Any], loc: tuple[str], text: str
) -> None:
    found = errors(**overrides)
    assert any(e_loc == loc and text in msg for e_loc, msg in found), found


def test_local_ip_is_normalized() -> None:
    assert source(local_ip="FE80::0001").local_ip == "fe80::1"


def test_rabbitmq_and_explicit_destinations() -> None:
    assert destinations(source(destination_style="rabbitmq")) == (
        "/topic/BLD-1.data",
        "/topic/BLD-1.management",
    )
    explicit = source(destinations=["/exchange/x/{building_id}.#", "jms.topic.other.data"])
    assert destinations(explicit) == ("/exchange/x/BLD-1.#", "jms.topic.other.data")


# --- endpoint ----------------------------------------------------------------------------------


def test_cloud_endpoint_from_the_stomp_url() -> None:
    ep = endpoint(source())
    assert ep == StompEndpoint(
        host="somename-stomp.eu-west.ubiant.io",
        port=4443,
        path="/",
        tls=True,
        ca_file=None,
        vhost="somename-stomp.eu-west.ubiant.io",
    )
    assert ep.url == "wss://somename-stomp.eu-west.ubiant.io:4443/"
    assert ep.stomp_host == "somename-stomp.eu-west.ubiant.io"


def test_local_mode_connects_to_the_ip_but_names_the_host() -> None:
    ep = endpoint(source(local_ip="10.0.0.1", ca_file="/etc/hemis-ca.pem"))
    assert (ep.host, ep.port, ep.tls) == ("10.0.0.1", 443, True)
    assert ep.host_header == ep.tls_hostname == "somename-stomp.eu-west.ubiant.io"
    assert ep.vhost == "somename-stomp.eu-west.ubiant.io"
    assert ep.ca_file == "/etc/hemis-ca.pem"
    assert ep.url == "wss://10.0.0.1:443/"
    assert ep.shown == "wss://10.0.0.1:443/ (as somename-stomp.eu-west.ubiant.io)"


def test_local_host_header_override_and_ipv6() -> None:
    ep = endpoint(source(local_ip="fe80::1", local_port=8443, local_host_header="somename.eu"))
    assert ep.host_header == ep.tls_hostname == "somename.eu"
    assert ep.url == "wss://[fe80::1]:8443/"


def test_plain_ws_default_port_path_and_vhost() -> None:
    ep = endpoint(source(url="ws://127.0.0.1:15674/ws", vhost="/", subprotocols=[]))
    assert (ep.host, ep.port, ep.path, ep.tls) == ("127.0.0.1", 15674, "/ws", False)
    assert ep.stomp_host == "/"
    assert ep.subprotocols == ()
    assert endpoint(source(url="ws://broker")).port == 80


def test_stomp_options_from_the_entry() -> None:
    options = stomp_options(source(heartbeat_send_ms=0, connect_timeout="2s", max_pending=7))
    assert options.heartbeat_send_ms == 0
    assert options.heartbeat_receive_ms == 20_000
    assert options.connect_timeout == options.subscribe_timeout == 2.0
    assert options.max_pending == 7
    assert options.idle_timeout == 300.0


# --- token source -----------------------------------------------------------------------------


def test_static_token_and_login_override() -> None:
    assert credentials_provider(source())() == StompCredentials("BLD-1", TOKEN)
    assert credentials_provider(source(login="guest"))().login == "guest"
    assert TOKEN not in repr(credentials_provider(source())())


def test_token_file_is_read_at_every_connection(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n", encoding="utf-8")
    provide = credentials_provider(source(token=None, token_file=str(path)))
    assert provide().passcode == TOKEN
    path.write_text("fresh-token-2", encoding="utf-8")
    assert provide() == StompCredentials("BLD-1", "fresh-token-2")


def test_unreadable_or_empty_token_file_is_a_config_error(tmp_path: Path) -> None:
    missing = credentials_provider(source(token=None, token_file=str(tmp_path / "nope")))
    with pytest.raises(SourceConfigError) as info:
        missing()
    assert str(info.value) == (
        f"source 'hemis-home': token_file '{tmp_path / 'nope'}' cannot be read: "
        "No such file or directory"
    )
    empty = tmp_path / "empty"
    empty.write_text(" \n", encoding="utf-8")
    with pytest.raises(SourceConfigError, match="is empty"):
        credentials_provider(source(token=None, token_file=str(empty)))()


# --- keys and envelopes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('{"type":"SENSOR_STATE","sensorId":"S#1","itId":"I"}', b"S#1"),
        ('{"type":"SENSOR_STATE","itId":"I"}', b"I"),
        ('{"type":"SENSOR_STATE","sensorId":"","itId":"I"}', b"I"),
        ('{"type":"ACTUATOR_TARGET_STATE","itId":"I","value":{"actuatorId":"A#C01"}}', b"A#C01"),
        ('{"type":"ACTUATOR_CURRENT_STATE","itId":"I","value":3}', b"I"),
        ('{"type":"IT_STATE","itId":"I"}', b"I"),
        ('{"type":"FACTOR_CURRENT_STATE","zoneId":"Salon"}', b"Salon"),
        ('{"type":"OBJECTIVE_STATE","objectiveId":123}', b"123"),
        ('{"type":"NEW_DATA","container":{"dataInfo":{"sourceId":"SRC"}}}', b"SRC"),
        ('{"type":"ENTITY_MANAGEMENT","entityId":"Chambre_01"}', b"Chambre_01"),
        ('{"type":"ENTITY_MANAGEMENT","entityId":true}', None),
        ('{"type":"DATA_PROVIDER","container":[]}', None),
        ('{"type":"UNKNOWN","itId":"I"}', None),
        ('{"itId":"I"}', None),
        ("[1]", None),
        ("not json", None),
        (b'{"type":"IT_STATE","itId":"\xc3\xa9"}', "é".encode()),
    ],
)
def test_frame_key(body: str | bytes, key: bytes | None) -> None:
    assert frame_key(body) == key


HEADERS = {
    "destination": "jms.topic.BLD-1.data",
    "subscription": "sub-0",
    "message-id": "m-1",
    "content-type": "application/json",
    "content-length": "2",
    "x-internal": "not copied",
}


def test_text_body_published_unchanged_with_safe_meta() -> None:
    body = '{"type":"IT_STATE","value":"°C\\u0000"}\n'
    env = build_envelope("hemis-home", StompMessage(HEADERS, body.encode(), False), 3)
    assert env.source == KIND == "hemis"
    assert env.payload == body
    assert env.meta == {
        "connection": 3,
        "destination": "jms.topic.BLD-1.data",
        "subscription": "sub-0",
        "message_id": "m-1",
        "content_type": "application/json",
    }
    assert decode_envelope(encode_envelope(env)) == env


@pytest.mark.parametrize(
    ("body", "binary"), [(b'{"type":"IT_STATE"}', True), (b"\xff\x00not utf-8", False)]
)
def test_binary_or_non_utf8_bodies_become_base64(body: bytes, binary: bool) -> None:
    env = build_envelope("hemis-home", StompMessage({}, body, binary), 1)
    assert env.meta == {"connection": 1, "encoding": "base64"}
    assert base64.b64decode(env.payload) == body
