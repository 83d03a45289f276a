"""A filter that answers trigger segments with ICMP "communication administratively prohibited".

Imitates routers and firewalls that reject with ICMP type 3 code 13 (RFC 1812 section 5.2.7.1;
iptables `REJECT --reject-with icmp-admin-prohibited`): the error comes from the router's own
address, quoting the request as the router saw it, so it names the hop.

Rules only, in filter FORWARD (REJECT is not allowed in mangle PREROUTING).
"""

from . import _common


def main() -> None:
    args = _common.parser("icmp", __doc__, where="forward", wheres=("forward",)).parse_args()
    spec = ["-p", "tcp", "--dport", str(args.port), *_common.string_match(args.trigger),
            "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]
    _common.main_rules_only("icmp", [("filter", "FORWARD", spec)])


if __name__ == "__main__":
    main()
