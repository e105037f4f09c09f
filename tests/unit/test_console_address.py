"""The address `just up`, `just demo` and `just cluster` print for the console."""

from __future__ import annotations

from services.stack.local import console_address


def test_the_console_is_where_the_gateway_serves_http() -> None:
    assert console_address({}) == "http://127.0.0.1:8500/ui/"
    assert console_address({"GATEWAY_HTTP_PORT": "8501"}) == "http://127.0.0.1:8501/ui/"
    assert console_address({"GATEWAY_HTTP_PORT": "0"}) == ""  # no HTTP, no console
    everywhere = {"GATEWAY_BIND": "0.0.0.0", "GATEWAY_HTTP_PORT": "9000"}  # noqa: S104
    assert console_address(everywhere) == "http://127.0.0.1:9000/ui/"
    assert console_address({"GATEWAY_BIND": "10.1.2.3"}) == "http://10.1.2.3:8500/ui/"
