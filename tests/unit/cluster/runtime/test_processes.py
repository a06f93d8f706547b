import socket
from pathlib import Path

from cluster.runtime.processes import CHOSEN_PORTS, free_ports


def test_free_ports_are_distinct_bindable_and_outside_the_kernels_ephemeral_range():
    # A port from the ephemeral range can be taken by any process's bind to port 0 (a Ray
    # worker's gRPC server) before our server binds it; these ports never are.
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(port in CHOSEN_PORTS and not low <= port <= high for port in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_handed_out():
    held = []
    try:
        for port in free_ports(50):
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        in_use = {sock.getsockname()[1] for sock in held}
        assert not in_use & set(free_ports(200))
    finally:
        for sock in held:
            sock.close()
