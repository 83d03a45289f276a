"""A firewall that refuses connections to a port: its kernel answers the SYN with a RST.

Imitates a stateful packet filter with a "reject" policy (iptables `REJECT --reject-with
tcp-reset`, the usual "reject" action of commodity firewalls): the RST/ACK comes from the
firewall's own stack, in the server's name, with the firewall's TTL (64 at the firewall) and
IP-ID, sequence 0 and ack = SYN+1, long before the server could have answered.

Rules only, in filter FORWARD (REJECT is not allowed in mangle PREROUTING).
"""

from . import _common


def main() -> None:
    args = _common.parser("firewall", __doc__, where="forward", wheres=("forward",),
                           uses_trigger=False).parse_args()
    spec = ["-p", "tcp", "--syn", "--dport", str(args.port),
            "-j", "REJECT", "--reject-with", "tcp-reset"]
    _common.main_rules_only("firewall", [("filter", "FORWARD", spec)])


if __name__ == "__main__":
    main()
