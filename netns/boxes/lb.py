"""A load balancer / NAT in front of the server: a virtual IP rewritten to the real server.

Imitates a layer-4 load balancer or a port-forwarding NAT (iptables DNAT, as in LVS-NAT or a
home router): the client talks to the VIP; the packets it gets back are the server's own, with
only the source address rewritten, so the server's TTL and IP-ID survive. Run it on the last
router (the one whose `dn` side holds the server's /24, so the VIP routes there).

With `--synproxy` the router itself answers SYNs to --port with a syncookie SYN-ACK (iptables
SYNPROXY, as DDoS-protecting load balancers do) and only then opens the connection to the
server: the SYN-ACK carries the router's TTL and IP-ID, every later packet the server's -- a
trap for a checker that takes the SYN-ACK's TTL as the server's.

Both families: --vip/--backend over IPv4 and --vip6/--backend6 over IPv6 (ip6tables' DNAT and
SYNPROXY, the same rules).
"""

from pathlib import Path

from . import _common

SYNPROXY_SYSCTL = "/proc/sys/net/netfilter/nf_conntrack_tcp_loose"


def main() -> None:
    p = _common.parser("lb", __doc__, uses_trigger=False)
    p.add_argument("--vip", default="203.0.113.100", help="address the clients use")
    p.add_argument("--backend", default="203.0.113.80", help="the real server")
    p.add_argument("--vip6", default="2001:db8:113::100", help="IPv6 address the clients use")
    p.add_argument("--backend6", default="2001:db8:113::80", help="the real server's IPv6 address")
    p.add_argument("--synproxy", action="store_true", help="answer SYNs to --port here (SYNPROXY)")
    args = p.parse_args()
    _common.refuse_root_namespace()
    pairs = ((args.vip, args.backend), (args.vip6, args.backend6))
    rules = [("nat", "PREROUTING", ["-d", vip, "-j", "DNAT", "--to-destination", backend]) for vip, backend in pairs]
    if not args.synproxy:
        _common.serve("lb", rules)
        return
    for vip, backend in pairs:
        rules += synproxy_rules(vip, backend, args.port)
    loose = Path(SYNPROXY_SYSCTL)  # this namespace's copy
    before = loose.read_text()
    loose.write_text("0\n")  # the client's ACK to an unknown flow must be INVALID, for SYNPROXY
    _common.serve("lb", rules, cleanup=lambda: loose.write_text(before))


def synproxy_rules(vip: str, backend: str, port: int) -> list[tuple[str, str, list[str]]]:
    """The SYN skips conntrack (so no NAT yet) and SYNPROXY answers it; when the client's ACK
    carries a valid cookie, SYNPROXY sends its own SYN to the VIP, which nat OUTPUT rewrites."""
    tcp = ["-d", vip, "-p", "tcp", "--dport", str(port)]
    return [
        ("raw", "PREROUTING", [*tcp, "--syn", "-j", "CT", "--notrack"]),
        ("filter", "FORWARD", [*tcp, "-m", "conntrack", "--ctstate", "INVALID,UNTRACKED",
                               "-j", "SYNPROXY", "--sack-perm", "--timestamp", "--wscale", "7",
                               "--mss", "1460"]),
        ("filter", "FORWARD", [*tcp, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]),
        ("nat", "OUTPUT", ["-d", vip, "-j", "DNAT", "--to-destination", backend]),
    ]


if __name__ == "__main__":
    main()
