"""uvicorn's WebSocket connections written to directly: a ready frame to many sockets.

realtime.fanout builds a broadcast's frame once; through each viewer's ASGI send,
uvicorn's websockets-sansio protocol would frame the text again for every viewer.
"""

from __future__ import annotations

from collections.abc import Callable


def socket_writer(send: Callable) -> Callable[[bytes], bool] | None:
    """A function writing a ready frame to this connection's socket, or None.

    For uvicorn's websockets-sansio connections, as polling.serve runs it, recognised by
    the ASGI `send` (a method of the connection's protocol), possibly wrapped by channels'
    session middleware. The writer hands the frame to the connection's asyncio
    transport, which sends at once when nothing is queued before it (else queues behind,
    so frames keep their order), and returns False, writing nothing, once the WebSocket
    is no longer open. A frame written beside the protocol's own sans-I/O connection is
    valid: a server's frames are unmasked and independent, and permessage-deflate allows
    uncompressed messages.
    """
    for _ in range(4):
        owner = getattr(send, "__self__", None)
        if owner is not None and hasattr(owner, "real_send"):  # channels' InstanceSessionWrapper
            send = owner.real_send
            continue
        break
    protocol = getattr(send, "__self__", None)
    if protocol is None or type(protocol).__qualname__ != "WebSocketsSansIOProtocol":
        return None
    transport = getattr(protocol, "transport", None)
    if transport is None or not all(
        hasattr(protocol, name) for name in ("close_sent", "disconnected", "handshake_complete")
    ):
        return None

    def write(frame: bytes) -> bool:
        if protocol.close_sent or protocol.disconnected or not protocol.handshake_complete or transport.is_closing():
            return False
        transport.write(frame)
        return True

    return write
