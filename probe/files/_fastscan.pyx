# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled twin of `analyze.FlowTable` and `ordinary.Ordinary`, and a classic-pcap reader in C.

Theory of operation. `probe analyze` spends nearly all of a big capture's time on two things it does
once per packet: reading the record out of the file, and following the flow's close and its
pre-judgement (`probe.files.ordinary`) from a few header fields. In Python that costs some 10 µs a
packet; here the record headers, the link layer and the IPv4 and TCP headers are read through a
pointer into the file's bytes, each flow's state is C fields, and a kept packet is copied straight
into its flow's buffer (the same layout as `analyze.OpenFlow.raw`). What is rare stays in Python,
called from here: IPv6 (`record.ipv6_transport`, `record.parse_ip`), ICMP errors, VLAN tags and
loopback links (`pcapfile.ip_payload`), pcapng and text captures (`pcapfile.ip_packets`), the
filters, and every sentence (`ordinary.ordinary_verdict`, `pcapfile._damaged`).

It must judge exactly as the pure code does: `FastFlowTable.feed` follows `FlowTable.feed`
statement by statement, and `tests/unit/test_fastscan.py` holds the two to the same flows (kept
bytes, counts, close, pre-judgement, totals) and the same verdicts and origins over every golden
capture, every real capture of ../shared/realworld and property-generated exchanges. When this
extension is not built, `probe.files.flows` uses the pure code; `PROBE_PURE=1` forces it.
"""

from libc.string cimport memcpy, memcmp
from libc.stdint cimport uint32_t, int32_t, uint16_t
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Calloc, PyMem_Free

import os
import stat
import struct

from probe.files import flows as _az
from probe.files import ordinary as _ord
from probe.files import pcap as _pf
from probe.record import ICMP6_ERROR_TYPES, ICMP_ERROR_TYPES, address_text, ipv6_transport, parse_ip

cdef int SYN = 0x02, ACK = 0x10, RST = 0x04, FIN = 0x01, PSH = 0x08
cdef int ALLOWED_AFTER_HANDSHAKE = 0x10 | 0x08 | 0x01
cdef int KEEP_ALL = _az.KEEP_ALL
cdef double LINGER = _az.LINGER, LATE_MAX = _az.LATE_MAX, IDLE = _az.IDLE, SWEEP_EVERY = _az.SWEEP_EVERY
cdef Py_ssize_t FINISHED_KEYS = _az.FINISHED_KEYS
cdef Py_ssize_t MAX_RECORD = _pf.MAX_RECORD
cdef Py_ssize_t CHUNK = _pf.CHUNK
_records_of = _az.records_of
_flag_bits = _az._flag_bits
_quoted_key = _az._quoted_key
_ordinary_verdict = _ord.ordinary_verdict
_OpenFlow = _az.OpenFlow


cdef inline int32_t ahead(uint32_t a, uint32_t b):
    """a - b in sequence space, signed (`ordinary._ahead`, `tcp.seq_diff`)."""
    return <int32_t>(a - b)


cdef inline bint common_initial(int ttl):
    return ttl == 32 or ttl == 64 or ttl == 128 or ttl == 255


cdef inline int hop_distance(int ttl):
    """`engine.baseline.hop_distance`."""
    cdef int start = 255
    if ttl <= 32:
        start = 32
    elif ttl <= 64:
        start = 64
    elif ttl <= 128:
        start = 128
    return start - ttl + 1


cdef enum:
    SMALL = 16  # entries of `by_end` and `client_ids` kept in C arrays before a dict or a bitmap takes the rest
    ID_BYTES = 8192  # a bitmap of every 16-bit IP-ID: 8 KiB a flow, whatever its length


cdef class FastOrdinary:
    """`ordinary.Ordinary` in C fields; `verdict` hands its times and TTLs to the pure module's sentences.
    Its `by_end` (dict) and `client_ids` (set) are C arrays for their first SMALL entries, the rest
    in a dict and a bitmap of the 65,536 IP-IDs made only when needed: a short flow (most of them)
    then allocates neither, and a long one's IP-IDs cost 8 KiB, not a set entry each (at ten
    million packets of 2,000 downloads under way at once, a set of each flow's IP-IDs took 500 MB)."""

    cdef public bint still
    cdef public double syn_t
    cdef int syn_ttl, synack_ttl, synack_df
    cdef uint32_t syn_seq, server_next, client_end
    cdef bint has_synack, has_request, has_answer
    cdef double synack_t, last_ours_t, half_rtt, request_t, answer_t
    cdef uint32_t end_keys[SMALL]
    cdef double end_times[SMALL]
    cdef int n_ends
    cdef dict more_ends
    cdef int ids[SMALL]
    cdef int n_ids
    cdef unsigned char* id_bits  # NULL until more than SMALL IP-IDs were seen; then ID_BYTES bytes

    def __init__(self, double t, int ttl, int flags, uint32_t seq, int ip_id, int version):
        self.still = version == 4 and flags == SYN
        self.syn_t, self.syn_ttl, self.syn_seq = t, ttl, seq
        self.has_synack = self.has_request = self.has_answer = False
        self.client_end = seq + 1
        self.n_ends = self.n_ids = 0
        self.more_ends = None
        self.id_bits = NULL
        self.note_end(self.client_end, t)
        self.note_id(ip_id)
        self.last_ours_t = t
        self.half_rtt = 0.0

    cdef inline bint end_time(self, uint32_t end, double* when):
        """`by_end.get(end)`: True and the time in `when` if there."""
        cdef int i
        for i in range(self.n_ends):
            if self.end_keys[i] == end:
                when[0] = self.end_times[i]
                return True
        if self.more_ends is not None:
            found = self.more_ends.get(end)
            if found is not None:
                when[0] = <double>found
                return True
        return False

    cdef inline void note_end(self, uint32_t end, double t):
        """`if end not in by_end: by_end[end] = t`."""
        cdef double before
        if self.end_time(end, &before):
            return
        if self.n_ends < SMALL:
            self.end_keys[self.n_ends], self.end_times[self.n_ends] = end, t
            self.n_ends += 1
            return
        if self.more_ends is None:
            self.more_ends = {}
        self.more_ends[end] = t

    cdef inline bint has_id(self, int ip_id):
        """`ip_id in client_ids`."""
        cdef int i
        for i in range(self.n_ids):
            if self.ids[i] == ip_id:
                return True
        return self.id_bits != NULL and (self.id_bits[(ip_id >> 3) & (ID_BYTES - 1)] >> (ip_id & 7)) & 1

    cdef inline void note_id(self, int ip_id):
        """`client_ids.add(ip_id)`."""
        if self.has_id(ip_id):
            return
        if self.n_ids < SMALL:
            self.ids[self.n_ids] = ip_id
            self.n_ids += 1
            return
        if self.id_bits == NULL:
            self.id_bits = <unsigned char*>PyMem_Calloc(ID_BYTES, 1)
            if self.id_bits == NULL:
                raise MemoryError()
        self.id_bits[(ip_id >> 3) & (ID_BYTES - 1)] |= <unsigned char>(1 << (ip_id & 7))

    def __dealloc__(self):
        PyMem_Free(self.id_bits)

    cdef void ours(self, double t, int ttl, int flags, uint32_t seq, Py_ssize_t length, int ip_id):
        cdef uint32_t end
        if not self.has_synack or ttl != self.syn_ttl or flags & ~ALLOWED_AFTER_HANDSHAKE or not flags & ACK:
            self.still = False
            return
        end = seq + <uint32_t>length + <uint32_t>(flags & FIN)
        if ahead(end, self.client_end) > 0:
            self.client_end = end
        self.note_end(end, t)
        self.note_id(ip_id)
        if t > self.last_ours_t:
            self.last_ours_t = t
        if length and not self.has_request:
            self.has_request, self.request_t = True, t

    cdef void theirs(self, double t, int ttl, int df, int flags, uint32_t seq, uint32_t ack, Py_ssize_t length,
                     int ip_id):
        cdef double before
        if not self.has_synack:
            if flags != SYN | ACK or ack != self.syn_seq + 1 or not common_initial(self.syn_ttl) \
                    or common_initial(ttl) or self.syn_ttl <= hop_distance(ttl) - 3:
                self.still = False
                return
            self.has_synack, self.synack_t, self.synack_ttl, self.synack_df = True, t, ttl, df
            self.server_next = seq + 1
            self.half_rtt = (t - self.syn_t if t - self.syn_t > 0.0 else 0.0) / 2
            return
        if ttl != self.synack_ttl or df != self.synack_df or flags & ~ALLOWED_AFTER_HANDSHAKE or not flags & ACK \
                or ahead(ack, self.client_end) > 0 or (ip_id and self.has_id(ip_id)):
            self.still = False
            return
        if not self.end_time(ack, &before):
            before = self.last_ours_t
        if t - before < self.half_rtt:
            self.still = False
            return
        if length:
            if seq != self.server_next:
                self.still = False
                return
            self.server_next = seq + <uint32_t>length
            if not self.has_answer:
                self.has_answer, self.answer_t = True, t
        if flags & FIN:
            self.server_next = self.server_next + 1

    def holds(self):
        """`Ordinary.holds`."""
        return self.still and self.has_answer

    def verdict(self):
        """`Ordinary.verdict`, by the pure module's `ordinary_verdict` (one place for its sentences)."""
        if not self.still or not self.has_answer:
            return None
        return _ordinary_verdict(self.syn_ttl, self.synack_ttl, self.syn_t, self.synack_t,
                                 self.request_t if self.has_request else None, self.answer_t)


cdef FastOrdinary _not_ordinary():
    cdef FastOrdinary ordinary = FastOrdinary(0.0, 0, 0, 0, 0, 4)
    ordinary.still = False
    return ordinary


cdef FastOrdinary NOT_ORDINARY = _not_ordinary()


cdef class FastFlow:
    """`analyze.OpenFlow` in C fields (the same public attributes `analyze.judge` reads)."""

    cdef public str client, server
    cdef public int client_port, server_port
    cdef public object client_isn
    cdef public bytearray raw
    cdef public Py_ssize_t count, elided
    cdef public double last_t, wait
    cdef bint closed
    cdef bint has_fin[2]
    cdef bint fin_acked[2]
    cdef double closed_t
    cdef uint32_t fin_end[2]
    cdef int last_ttl[2]  # the TTL of the last packet of each side (-1: none yet); by address in the pure code
    cdef public FastOrdinary ordinary_state
    cdef bytes client_end
    cdef bint same_address  # both ends one address: `last_ttl` is then one entry, as the pure dict is
    cdef public str source  # the classic pcap file the packets kept by place are read back from

    def __init__(self, str client, int client_port, str server, int server_port, isn, bytes client_end,
                 bint same_address):
        self.client, self.client_port, self.server, self.server_port = client, client_port, server, server_port
        self.client_isn = isn
        self.raw = bytearray()
        self.count = self.elided = 0
        self.last_t, self.wait = 0.0, LINGER
        self.closed = False
        self.has_fin[0] = self.has_fin[1] = self.fin_acked[0] = self.fin_acked[1] = False
        self.last_ttl[0] = self.last_ttl[1] = -1
        self.ordinary_state = None
        self.client_end = client_end
        self.same_address = same_address
        self.source = None

    @property
    def ordinary(self):
        return self.ordinary_state

    @property
    def closed_at(self):
        return self.closed_t if self.closed else None

    @property
    def fin_ends(self):
        return {side: self.fin_end[i] for i, side in enumerate(("client", "server")) if self.has_fin[i]}

    @property
    def fins_acked(self):
        return {side for i, side in enumerate(("client", "server")) if self.fin_acked[i]}

    @property
    def records(self):
        """The kept packets as records (`analyze.records_of`); those kept by place read back from the file."""
        return records_of_file(self.raw, self.source)

    def detach(self):
        """What a worker process needs to judge the flow (`analyze.Judges`): no copy of the packets
        kept by place, only where they are."""
        return (self.client, self.client_port, self.server, self.server_port, bytes(self.raw), self.elided,
                self.source)

    cdef inline void note_ttl(self, int side, int ttl):
        self.last_ttl[side] = ttl
        if self.same_address:
            self.last_ttl[1 - side] = ttl

    cdef bint elide(self, double t, int side, int ttl, int flags):
        """`OpenFlow.elide`."""
        if self.count < KEEP_ALL or flags & (SYN | RST | FIN) or self.last_ttl[side] != ttl \
                or self.has_fin[0] or self.has_fin[1]:
            self.note_ttl(side, ttl)
            return False
        self.last_t = t
        self.elided += 1
        return True

    cdef void keep(self, double t, const unsigned char* packet, Py_ssize_t n, long long at):
        """`OpenFlow._keep`: the time and length (`analyze._KEPT`, native order), then the bytes; or,
        for a packet at offset `at` (not -1) of the file, the length with its top bit set and the
        offset: read back only if the flow goes to the engine (most never do)."""
        cdef Py_ssize_t old = PyByteArray_GET_SIZE(self.raw)
        cdef uint32_t length = <uint32_t>n
        cdef char* to
        if at >= 0:
            self.note_time(t)
            length |= 0x80000000u
            PyByteArray_Resize(self.raw, old + 20)
            to = PyByteArray_AS_STRING(self.raw) + old
            memcpy(to, &t, 8)
            memcpy(to + 8, &length, 4)
            memcpy(to + 12, &at, 8)
            self.count += 1
            return
        self.note_time(t)
        PyByteArray_Resize(self.raw, old + 12 + n)
        to = PyByteArray_AS_STRING(self.raw) + old
        memcpy(to, &t, 8)
        memcpy(to + 8, &length, 4)
        memcpy(to + 12, packet, n)
        self.count += 1

    cdef inline void note_time(self, double t):
        if self.closed:
            if 2 * (t - self.last_t) > self.wait:
                self.wait = 2 * (t - self.last_t)
            if self.wait > LATE_MAX:
                self.wait = LATE_MAX
        self.last_t = t

    cdef void add_other(self, double t, const unsigned char* packet, Py_ssize_t n, long long at):
        """`OpenFlow.add_other`."""
        self.keep(t, packet, n, at)
        if self.ordinary_state is not None:
            self.ordinary_state.still = False
        else:
            self.ordinary_state = NOT_ORDINARY

    cdef void add_tcp(self, double t, const unsigned char* packet, Py_ssize_t n, Py_ssize_t l4, bint from_client,
                      int ttl, int flags, long long at):
        """`OpenFlow.add_tcp`."""
        cdef Py_ssize_t ip_len = (packet[2] << 8) | packet[3]
        cdef Py_ssize_t end, offset, length
        cdef uint32_t seq, ack
        cdef int ip_id = (packet[4] << 8) | packet[5]
        cdef FastOrdinary ordinary
        if ip_len >= l4:
            end = n if n < ip_len else ip_len
        else:
            end = n
        offset = (packet[l4 + 12] >> 4) << 2
        if offset < 20 or offset > end - l4:
            self.add_other(t, packet, n, at)
            return
        length = end - l4 - offset + (ip_len - end if ip_len > end else 0)
        seq = (<uint32_t>packet[l4 + 4] << 24) | (<uint32_t>packet[l4 + 5] << 16) | (<uint32_t>packet[l4 + 6] << 8) \
            | packet[l4 + 7]
        ack = (<uint32_t>packet[l4 + 8] << 24) | (<uint32_t>packet[l4 + 9] << 16) | (<uint32_t>packet[l4 + 10] << 8) \
            | packet[l4 + 11]
        self.keep(t, packet, n, at)
        ordinary = self.ordinary_state
        if ordinary is None:
            self.ordinary_state = FastOrdinary(t, ttl, flags, seq, ip_id, 4) if from_client else NOT_ORDINARY
        elif ordinary.still:
            if from_client:
                ordinary.ours(t, ttl, flags, seq, length, ip_id)
            else:
                ordinary.theirs(t, ttl, packet[6] & 0x40, flags, seq, ack, length, ip_id)
        if flags & (RST | FIN) or self.has_fin[0] or self.has_fin[1]:
            self.follow_close(t, from_client, flags, seq, ack, <uint32_t>length)

    cdef void add_record(self, double t, const unsigned char* packet, Py_ssize_t n, record, long long at):
        """`OpenFlow.add_record` (IPv6)."""
        if record.proto != "tcp":
            self.add_other(t, packet, n, at)
            return
        self.keep(t, packet, n, at)
        self.ordinary_state = NOT_ORDINARY
        self.follow_close(t, record.src == self.client and record.sport == self.client_port,
                          _flag_bits(record.flags), record.seq % 2**32, record.ack % 2**32, record.length % 2**32)

    cdef void follow_close(self, double t, bint from_client, int flags, uint32_t seq, uint32_t ack, uint32_t length):
        """`OpenFlow._follow_close`."""
        cdef int side = 0 if from_client else 1
        cdef int other = 1 - side
        if flags & RST:
            self.close_at(t)
            return
        if flags & FIN:
            self.has_fin[side] = True
            self.fin_end[side] = seq + length + (1 if flags & SYN else 0) + 1
        if self.has_fin[other] and flags & ACK and ahead(ack, self.fin_end[other]) >= 0:
            self.fin_acked[other] = True
            if self.fin_acked[0] and self.fin_acked[1]:
                self.close_at(t)

    cdef inline void close_at(self, double t):
        """`closed_at = closed_at or t`, as the pure code says it (a close at time 0.0 is taken again)."""
        if not self.closed or self.closed_t == 0.0:
            self.closed, self.closed_t = True, t


cdef inline bytes flow_key(const unsigned char* source, const unsigned char* source_port,
                           const unsigned char* destination, const unsigned char* destination_port, int width):
    """`analyze._flow_key`: address and port of each end, the smaller end first."""
    cdef unsigned char one[18]
    cdef unsigned char two[18]
    cdef unsigned char both[36]
    memcpy(one, source, width)
    memcpy(one + width, source_port, 2)
    memcpy(two, destination, width)
    memcpy(two + width, destination_port, 2)
    if memcmp(one, two, width + 2) < 0:
        memcpy(both, one, width + 2)
        memcpy(both + width + 2, two, width + 2)
    else:
        memcpy(both, two, width + 2)
        memcpy(both + width + 2, one, width + 2)
    return PyBytes_FromStringAndSize(<char*>both, 2 * (width + 2))


cdef class FastFlowTable:
    """`analyze.FlowTable`, compiled: feed packets in capture order, get finished flows back."""

    cdef public object wanted, totals
    cdef public str source  # set by `flows_of_file` while it reads a classic pcap: packets are kept by place
    cdef public dict open
    cdef set _unwanted
    cdef dict names
    cdef object _finished
    cdef bint has_sweep, filtering
    cdef double next_sweep
    cdef Py_ssize_t packets, ipv6_packets, tcp_packets, without_handshake, late, filtered_out, flows
    cdef list done
    cdef public bint keep_bytes  # keep every packet's bytes, not its place (`_flowjson` reads them)

    def __init__(self, wanted=None):
        self.wanted = wanted or _az.FlowFilter()
        self.filtering = bool(self.wanted.hosts or self.wanted.flows)
        self.open = {}
        self.totals = _az.Totals()
        self._unwanted = set()
        self.names = {}
        from collections import OrderedDict
        self._finished = OrderedDict()
        self.has_sweep = False
        self.packets = self.ipv6_packets = self.tcp_packets = self.without_handshake = self.late = 0
        self.filtered_out = self.flows = 0
        self.done = []
        self.source = None
        self.keep_bytes = False

    def sync(self):
        """Write the counters into `totals` (the pure table counts there directly)."""
        totals = self.totals
        totals.packets, totals.ipv6_packets, totals.tcp_packets = self.packets, self.ipv6_packets, self.tcp_packets
        totals.without_handshake, totals.late, totals.filtered_out = self.without_handshake, self.late, \
            self.filtered_out
        totals.flows = self.flows
        return totals

    def feed(self, double t, bytes packet):
        """`FlowTable.feed`: one IPv4 or IPv6 packet; the flows finished as of its time."""
        self.feed_at(t, packet, len(packet), packet, -1)
        done, self.done = self.done, []
        return done

    cdef void feed_at(self, double t, const unsigned char* packet, Py_ssize_t n, object as_bytes, long long at):
        """`FlowTable.feed` over bytes at a pointer (`as_bytes`: the same bytes as an object, or None
        to make them only if a Python helper needs them; `at`: their offset in `source`, or -1).
        Finished flows go to `self.done`."""
        cdef int version, proto, ttl, flags, width
        cdef Py_ssize_t l4
        cdef const unsigned char* source
        cdef const unsigned char* destination
        cdef FastFlow flow
        cdef uint32_t isn
        cdef bint from_client
        self.packets += 1
        if not self.has_sweep or t >= self.next_sweep:
            self.has_sweep, self.next_sweep = True, t + SWEEP_EVERY
            self.sweep_into(t)
        version = packet[0] >> 4 if n else 0
        if version == 4:
            if n < 20 or packet[6] & 0x1F or packet[7]:
                return
            proto, l4, ttl = packet[9], (packet[0] & 0x0F) << 2, packet[8]
            source, destination, width = packet + 12, packet + 16, 4
        elif version == 6:
            self.ipv6_packets += 1
            if as_bytes is None:
                as_bytes = PyBytes_FromStringAndSize(<const char*>packet, n)
            found = ipv6_transport(as_bytes)
            if found is None:
                return
            proto, l4 = found
            ttl = packet[7]
            source, destination, width = packet + 8, packet + 24, 16
        else:
            return
        if proto == 6:
            if n < l4 + 14:
                return
            self.tcp_packets += 1
            key = flow_key(source, packet + l4, destination, packet + l4 + 2, width)
            found_flow = self.open.get(key)
            flow = <FastFlow>found_flow if found_flow is not None else None
            flags = packet[l4 + 13]
            if flags & (SYN | ACK | RST) == SYN:
                isn = (<uint32_t>packet[l4 + 4] << 24) | (<uint32_t>packet[l4 + 5] << 16) \
                    | (<uint32_t>packet[l4 + 6] << 8) | packet[l4 + 7]
                if flow is not None and (flow.closed or t - flow.last_t > IDLE) and isn != flow.client_isn:
                    self.done.append(self.finish(key))
                    flow = None
                if flow is None:
                    flow = self.start(key, source, destination, packet + l4, width, isn)
            if flow is None:
                if key in self._unwanted:
                    self.filtered_out += 1
                elif key in self._finished:
                    self.late += 1
                else:
                    self.without_handshake += 1
                return
            from_client = memcmp(<const char*>flow.client_end, source, width) == 0 \
                and memcmp((<const char*>flow.client_end) + width, packet + l4, 2) == 0
            if flow.count < KEEP_ALL:
                flow.note_ttl(0 if from_client else 1, ttl)
            elif flow.elide(t, 0 if from_client else 1, ttl, flags):
                return
            if version == 4:
                if l4 >= 20:
                    flow.add_tcp(t, packet, n, l4, from_client, ttl, flags, at)
            else:
                record = parse_ip(as_bytes, t)
                if record is not None:
                    flow.add_record(t, packet, n, record, at)
        elif proto == (1 if version == 4 else 58) and n >= l4 + 8 \
                and packet[l4] in (ICMP_ERROR_TYPES if version == 4 else ICMP6_ERROR_TYPES):
            if as_bytes is None:
                as_bytes = PyBytes_FromStringAndSize(<const char*>packet, n)
            key = _quoted_key(as_bytes[l4 + 8:])
            found_flow = self.open.get(key) if key is not None else None
            if found_flow is not None:
                record = parse_ip(as_bytes, t)
                if record is not None and record.quoted is not None:
                    (<FastFlow>found_flow).add_other(t, packet, n, at)

    cdef FastFlow start(self, bytes key, const unsigned char* source, const unsigned char* destination,
                        const unsigned char* ports, int width, uint32_t isn):
        """`FlowTable._start`."""
        source_bytes = PyBytes_FromStringAndSize(<const char*>source, width)
        destination_bytes = PyBytes_FromStringAndSize(<const char*>destination, width)
        client, server = self.address_text(source_bytes), self.address_text(destination_bytes)
        client_port, server_port = (ports[0] << 8) | ports[1], (ports[2] << 8) | ports[3]
        if self.filtering and not self.wanted.wants(client, client_port, server, server_port):
            self._unwanted.add(key)
            return None
        self.flows += 1
        flow = FastFlow(client, client_port, server, server_port, isn,
                        source_bytes + PyBytes_FromStringAndSize(<const char*>ports, 2),
                        source_bytes == destination_bytes)
        flow.source = self.source
        self.open[key] = flow
        return flow

    cdef str address_text(self, bytes address):
        """`record.address_text`, remembered (a capture's flows share few addresses); bounded."""
        text = self.names.get(address)
        if text is None:
            if len(self.names) >= 65536:
                self.names.clear()
            text = self.names[address] = address_text(address)
        return text

    cdef void sweep_into(self, double now):
        """`FlowTable.sweep`, the finished flows appended to `self.done`."""
        cdef FastFlow flow
        cdef list finished = []
        for key, value in self.open.items():
            flow = <FastFlow>value
            if now - flow.last_t > (IDLE if not flow.closed else flow.wait) \
                    or (flow.closed and now - flow.closed_t > IDLE):
                finished.append(key)
        if len(self._unwanted) > 100_000:
            self._unwanted.clear()
        for key in finished:
            self.done.append(self.finish(key))

    def sweep(self, double now):
        self.sweep_into(now)
        done, self.done = self.done, []
        return done

    cdef FastFlow finish(self, key):
        """`FlowTable._finish`."""
        finished = self._finished
        finished.pop(key, None)
        finished[key] = None
        if len(finished) > FINISHED_KEYS:
            finished.popitem(last=False)
        return self.open.pop(key)

    def drain(self):
        """The flows still open at the end of the file, in the order they started."""
        flows = list(self.open.values())
        self.open.clear()
        self.sync()
        return flows

    def scan(self, bytes buffer, Py_ssize_t position, int marker, int fixed, bint ethernet, object linktype,
             long long base, bint nano):
        """Feed every complete record of a classic little-endian pcap (`nano`: its fractions are
        nanoseconds, else microseconds) in `buffer`
        (which starts at offset `base` of the file) from `position`; return (position of the first
        incomplete record, records read, the length a record claims past MAX_RECORD or 0)."""
        cdef const unsigned char* data = buffer
        cdef Py_ssize_t size = len(buffer), start, end, complete = 0
        cdef uint32_t seconds, fraction, length
        cdef double t
        cdef const unsigned char* kind
        while size - position >= 16:
            memcpy(&seconds, data + position, 4)
            memcpy(&fraction, data + position + 4, 4)
            memcpy(&length, data + position + 8, 4)
            if length > MAX_RECORD:
                return position, complete, length
            start = position + 16
            end = start + length
            if end > size:
                break
            position = end
            complete += 1
            t = _nano_time(seconds, fraction) if nano else seconds + fraction / 1e6
            if marker >= 0:
                if <Py_ssize_t>length >= marker + 2:
                    kind = data + start + marker
                    if (kind[0] == 0x08 and kind[1] == 0x00) or (kind[0] == 0x86 and kind[1] == 0xdd):
                        # `buffer[start + fixed:end]`: empty when the record is shorter than the link header
                        self.feed_at(t, data + start + fixed, end - start - fixed if end - start > fixed else 0,
                                     None, base + start + fixed if end - start > fixed and not self.keep_bytes else -1)
                        continue
                if not ethernet:
                    continue
            elif fixed == 0:
                self.feed_at(t, data + start, end - start, None, -1 if self.keep_bytes else base + start)
                continue
            packet = _pf.ip_payload(linktype, buffer[start:end])
            if packet is not None:
                self.feed_at(t, packet, len(packet), packet, -1)
        return position, complete, 0

    def take_done(self):
        done, self.done = self.done, []
        return done


def _nano_time(seconds, fraction):
    """A nanosecond timestamp as `pcapfile` makes it: Python's exact integer division."""
    return (seconds * 1_000_000_000 + fraction) / 1_000_000_000


def flows_of_file(str path, table, warnings, progress=None):
    """Every flow of a capture file under analysis by `table` (a `FastFlowTable`), as soon as it is
    over: `analyze.stream_flows(pcapfile.ip_packets(...))`, with classic little-endian pcap read
    here, in C, and anything else (big-endian, pcapng, text, a pipe) by `pcapfile.ip_packets`."""
    note = warnings.append if warnings is not None else _pf._ignore
    # the file's type from its name, never by opening it: a pipe opened and closed here would
    # lose what its writer sent (or leave the writer gone) before `ip_packets` opens it again
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
        handle = open(path, "rb") if regular else None
    except OSError:
        handle = None
    if handle is None:
        # unreadable (`ip_packets` says why), or a pipe: read once, as it comes, and kept as bytes
        yield from _az.stream_flows(_pf.ip_packets(path, warnings, progress), table)
        return
    with handle:
        magic = handle.read(4)
        nano = magic == b"\x4d\x3c\xb2\xa1"
        if magic != b"\xd4\xc3\xb2\xa1" and not nano:
            handle.close()
            yield from _az.stream_flows(_pf.ip_packets(path, warnings, progress), table)
            return
        size = os.fstat(handle.fileno()).st_size
        rest = handle.read(20)
        if len(rest) < 20:
            raise _pf.ProbeError(f"{path} is truncated inside its file header")
        linktype = int.from_bytes(rest[16:20], "little") & 0x0FFFFFFF
        _pf._check_linktype(path, linktype)
        fixed = {_pf.LINK_ETHERNET: 14, _pf.LINK_SLL: 16, _pf.LINK_SLL2: 20, _pf.LINK_NULL: 4,
                 _pf.LINK_LOOP: 4}.get(linktype, 0)
        marker = {_pf.LINK_ETHERNET: 12, _pf.LINK_SLL: 14, _pf.LINK_SLL2: 0}.get(linktype, -1)
        ethernet = linktype == _pf.LINK_ETHERNET
        table.source = path
        buffer, position, complete, base = b"", 0, 0, 24  # base: where `buffer` starts in the file
        while True:
            position, read, too_long = table.scan(buffer, position, marker, fixed, ethernet, linktype, base, nano)
            complete += read
            yield from table.take_done()
            if too_long:
                _pf._damaged(path, complete, f"is corrupt (a record claims {too_long} bytes, at most {MAX_RECORD} "
                                             f"make sense)", note)
                break
            if len(buffer) - position < 16:  # the next record header is not all here
                base += position
                buffer = buffer[position:] + handle.read(CHUNK)
                position = 0
                if progress is not None:
                    progress(handle.tell(), size)
                if not buffer:
                    break
                if len(buffer) < 16:
                    _pf._damaged(path, complete, "is truncated (a record header is cut short)", note)
                    break
            else:  # a record longer than what is left: read at least all of it
                claimed = int.from_bytes(buffer[position + 8:position + 12], "little")
                base += position
                buffer = buffer[position:] + handle.read(max(CHUNK, claimed + 16))
                position = 0
                if progress is not None:
                    progress(handle.tell(), size)
                if 16 + claimed > len(buffer):
                    _pf._damaged(path, complete, "is truncated (the last record is cut short)", note)
                    break
        yield from table.drain()


_KEPT_AT = struct.Struct("=dIq")


def records_of_file(raw, source):
    """`analyze.records_of` for a flow whose packets may be kept by place (`FastFlow.keep`): those
    are read back from `source`, the capture file."""
    if source is None:
        return _records_of(raw)
    records, position, kept, kept_at = [], 0, _az._KEPT, _KEPT_AT
    with open(source, "rb") as handle:
        descriptor = handle.fileno()
        while position < len(raw):
            t, length = kept.unpack_from(raw, position)
            if length & 0x80000000:
                _t, _length, at = kept_at.unpack_from(raw, position)
                position += kept_at.size
                packet = os.pread(descriptor, length & 0x7FFFFFFF, at)
            else:
                position += kept.size
                packet = bytes(raw[position:position + length])
                position += length
            records.append(parse_ip(packet, t))
    return records


def revive(client, client_port, server, server_port, raw, elided, source):
    """A flow from `FastFlow.detach`, in a worker process, for `analyze.judge`."""
    flow = FastFlow(client, client_port, server, server_port, 0, b"", False)
    flow.raw, flow.elided, flow.source = bytearray(raw), elided, source
    return flow
