"""polling.serve: the socket a supervisor hands over keeps its real family."""

from __future__ import annotations

import socket

from polling.serve import inherited_socket


def test_an_inherited_tcp_socket_is_taken_as_tcp_so_its_connections_can_disable_nagle():
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        taken = inherited_socket(listening.fileno())
        assert (taken.family, taken.type) == (socket.AF_INET, socket.SOCK_STREAM)
        assert taken.getsockname() == listening.getsockname()
        taken.detach()  # the descriptor stays the test's to close
    finally:
        listening.close()
