"""A censor that silently drops segments carrying the trigger: no reset, no ICMP, only timeouts.

Imitates the "null routing"/packet-dropping filters reported for HTTP keyword and Host
blocking (e.g. the drop-based blocking that CenTrace, CoNEXT 2022, locates by the hop after
which TTL-limited copies of the request stop drawing ICMP time-exceeded replies). The client
retransmits the request until it gives up.

Rules only: an iptables `string` match and DROP.
"""

from . import _common


def main() -> None:
    args = _common.parser("silentdrop", __doc__, where="forward").parse_args()
    table, chain = _common.hook(args.where)
    spec = ["-p", "tcp", "--dport", str(args.port), *_common.string_match(args.trigger),
            "-j", "DROP"]
    _common.main_rules_only("silentdrop", [(table, chain, spec)])


if __name__ == "__main__":
    main()
