# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""`probe analyze --json` of an ordinary flow, written in C: the same bytes as the engine's path.

Theory of operation. For a flow the pre-judgement holds ordinary to its end (`probe.files.ordinary`),
the engine can only say `clean`, with every packet of the client `self` and every packet in the
server's name `server`; what it would still work out is each server packet's evidence, and that
depends on a few facts of the whole flow: the baseline's round trip (`baseline.build_baseline`: the
handshake's, the second fastest answer to two segments of ours, each fresh acknowledgement of our
data), which segment of ours each packet answers (`baseline.causes`), and the server's IP-ID habit
(`baseline.classify_ip_ids`). `flow_json` works those out from the flow's kept bytes as the engine
does, statement by statement, and writes the flow as `render.flows.flow_json_text(
analyzed_flow_json(result))` would: every packet's fields (`render.report.packet_json`), its
origin and evidence, the verdict and the explanation, with `json`'s spacing and escapes.

What an ordinary flow's server packets are told, and why nothing else (`verdict._attribute_tcp`
over the signals of `engine.heuristics`): the SYN-ACK gets `verdict.synack_evidence`; every later
one `ttl_distance`'s "as the server's SYN-ACK", `too_early`'s `answered_after` when it came most of
a round trip after the segment that drew it, and `ip_id_habit`'s sentence when its IP-ID breaks a
counter (weight 1: confidence "medium", `verdict.weigh`). Every other signal needs a reset, a TTL,
DF or IPv6 field unlike the SYN-ACK's, or a fact the pre-judgement excludes. The sentences are the
engine's own: each is asked once of the engine's function with two sets of sample numbers, split
around them into fixed pieces (`_template`), and the numbers are written in between as Python's
float formatting writes them (`put_decimal`); a wording the pieces cannot reproduce leaves every
flow to the engine. (The IP-ID sentence is cut per flow, from `IpIdHabit.judge` of a habit holding
the first and last IP-ID of the count, which is all a counter's sentence names.)

Anything outside what is written here (a packet that is not a complete IPv4 TCP segment of the
flow, an answer whose cause the engine would find by its range search, a server packet outside the
baseline, an answer sooner than the path allows, a float too large for the short form) makes
`flow_json` return None, and the engine judges the flow (`flows.texts_of_recipes`).
`tests/unit/test_flowjson.py` holds this to the engine's JSON on every golden capture, every real
capture of ../shared/realworld, the benchmark's shapes and property-generated flows. `probe analyze
--json` keeps each ordinary flow as a recipe while it reads (`flows.ordinary_recipe`) and writes these
texts once the whole file is read, on every core (`commands.analyze._write_joined`).
"""

from libc.stdlib cimport malloc, realloc, free, qsort
from libc.string cimport memcpy, memcmp, strlen
from libc.stdint cimport uint32_t
from libc.math cimport fabs, floor, isfinite, signbit
from cpython.bytes cimport PyBytes_FromStringAndSize

import json

cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags, int* ptype) except NULL
    void PyMem_Free(void* p)
    int Py_DTSF_ADD_DOT_0

cdef int SYN = 0x02, ACK = 0x10, RST = 0x04, FIN = 0x01


# --- an output buffer ------------------------------------------------------------------------------

cdef extern from *:
    """
    /* The output buffer, and what every packet's line holds, written with literals of known length
       (`_flowjson.pyx`; the caller reserves room first). */
    typedef struct { char* data; Py_ssize_t size; Py_ssize_t cap; } Buf;
    #define J_MEM(b, p, n) do { memcpy((b)->data + (b)->size, (p), (n)); (b)->size += (n); } while (0)
    #define J_LIT(b, s) J_MEM(b, s, sizeof(s) - 1)
    #define J_FIELD(b, s, value) do { J_LIT(b, s); j_uint(b, (unsigned long long)(value)); } while (0)
    static const char J_PAIRS[] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    static inline void j_uint(Buf* b, unsigned long long value) {
        char digits[24];
        int i = 24;
        while (value >= 100) {
            unsigned pair = (unsigned)(value % 100);
            value /= 100;
            i -= 2;
            memcpy(digits + i, J_PAIRS + 2 * pair, 2);
        }
        if (value >= 10) {
            i -= 2;
            memcpy(digits + i, J_PAIRS + 2 * value, 2);
        } else {
            digits[--i] = (char)('0' + value);
        }
        memcpy(b->data + b->size, digits + i, 24 - i);
        b->size += 24 - i;
    }
    static void j_packet_start(Buf* b, long n, int sent) {
        J_LIT(b, "{\\"n\\": ");
        j_uint(b, (unsigned long long)n);
        if (sent) J_LIT(b, ", \\"dir\\": \\"sent\\", \\"t_ms\\": ");
        else J_LIT(b, ", \\"dir\\": \\"received\\", \\"t_ms\\": ");
    }
    static void j_packet_fields(Buf* b, const char* src, Py_ssize_t src_n, const char* dst, Py_ssize_t dst_n,
                                int ttl, int ip_id, int df, int tos, int sport, int dport, const char* flags,
                                Py_ssize_t flags_n, unsigned long long seq, unsigned long long ack, int win,
                                unsigned long long length) {
        J_LIT(b, ", \\"proto\\": \\"tcp\\", \\"src\\": ");
        J_MEM(b, src, src_n);
        J_LIT(b, ", \\"dst\\": ");
        J_MEM(b, dst, dst_n);
        J_FIELD(b, ", \\"ttl\\": ", ttl);
        J_FIELD(b, ", \\"ip_id\\": ", ip_id);
        if (df) J_FIELD(b, ", \\"df\\": true, \\"tos\\": ", tos);
        else J_FIELD(b, ", \\"df\\": false, \\"tos\\": ", tos);
        J_FIELD(b, ", \\"sport\\": ", sport);
        J_FIELD(b, ", \\"dport\\": ", dport);
        J_LIT(b, ", \\"flags\\": ");
        J_MEM(b, flags, flags_n);
        J_FIELD(b, ", \\"seq\\": ", seq);
        J_FIELD(b, ", \\"ack\\": ", ack);
        J_FIELD(b, ", \\"win\\": ", win);
        J_FIELD(b, ", \\"len\\": ", length);
        J_LIT(b, ", \\"options\\": ");
    }
    """
    ctypedef struct Buf:
        char* data
        Py_ssize_t size
        Py_ssize_t cap
    void j_uint(Buf* b, unsigned long long value)
    void j_packet_start(Buf* b, long n, int sent)
    void j_packet_fields(Buf* b, const char* src, Py_ssize_t src_n, const char* dst, Py_ssize_t dst_n, int ttl,
                         int ip_id, int df, int tos, int sport, int dport, const char* flags, Py_ssize_t flags_n,
                         unsigned long long seq, unsigned long long ack, int win, unsigned long long length)


cdef int grow(Buf* b, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = b.cap if b.cap else 8192
    cdef char* data
    while cap < b.size + need:
        cap *= 2
    data = <char*>realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data, b.cap = data, cap
    return 0


cdef inline int put(Buf* b, const char* s, Py_ssize_t n) except -1:
    if b.size + n > b.cap:
        grow(b, n)
    memcpy(b.data + b.size, s, n)
    b.size += n
    return 0


cdef inline int puts(Buf* b, const char* s) except -1:
    return put(b, s, strlen(s))


cdef inline int put_bytes(Buf* b, bytes s) except -1:
    return put(b, <const char*>s, len(s))


cdef int put_uint(Buf* b, unsigned long long value) except -1:
    if b.size + 24 > b.cap:
        grow(b, 24)
    j_uint(b, value)
    return 0


cdef int put_int(Buf* b, long long value) except -1:
    if value < 0:
        puts(b, "-")
        return put_uint(b, <unsigned long long>(-value))
    return put_uint(b, <unsigned long long>value)


cdef inline int put_field(Buf* b, const char* key, long long value) except -1:
    """`key` (its punctuation around it) and an integer."""
    puts(b, key)
    return put_int(b, value)


cdef int put_repr(Buf* b, double value) except -1:
    """`repr(value)`, as `json` writes a float (finite only: the caller checks)."""
    cdef char* text = PyOS_double_to_string(value, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    try:
        put(b, text, strlen(text))
    finally:
        PyMem_Free(text)
    return 0


cdef int put_fixed(Buf* b, double value, int precision) except -1:
    """`f"{value:.{precision}f}"`."""
    cdef char* text = PyOS_double_to_string(value, b'f', precision, 0, NULL)
    try:
        put(b, text, strlen(text))
    finally:
        PyMem_Free(text)
    return 0


cdef int put_round3(Buf* b, double value) except -1:
    """`repr(round(value, 3))` for |value| < 1e9: `round` takes the correctly rounded decimal with
    three places (as `.3f` writes it, both by `_Py_dg_dtoa`'s mode 3), and `repr` of the float
    nearest to it is that decimal without its trailing zeros (one kept after the point): below
    1e9 it has at most 12 digits, so no shorter decimal names the same float."""
    cdef char* text = PyOS_double_to_string(value, b'f', 3, 0, NULL)
    cdef Py_ssize_t n = strlen(text)
    try:
        while n > 2 and text[n - 1] == 48 and text[n - 2] != 46:  # '0', not after '.'
            n -= 1
        put(b, text, n)
    finally:
        PyMem_Free(text)
    return 0


cdef int put_decimal(Buf* b, double value, int places, bint strip) except -1:
    """`f"{value:.{places}f}"` (places 1 to 3), or with `strip` `repr(round(value, places))` (`put_round3`'s
    reasoning), from the value scaled to an integer: exact when the scaled value is at most 1e10 and
    not within 1e-5 of a tie, where the product's rounding error (under 2e-6) cannot change the
    decimal; else by Python's own formatting."""
    cdef double scale = 10.0 if places == 1 else 100.0 if places == 2 else 1000.0
    cdef double scaled = fabs(value) * scale, whole, fraction
    cdef unsigned long long digits, unit = <unsigned long long>scale
    cdef char text[40]
    cdef int n = 40, kept = 0
    if not scaled <= 1e10:
        return put_fixed(b, value, places) if not strip else put_round3(b, value)
    whole = floor(scaled)
    fraction = scaled - whole
    if fabs(fraction - 0.5) < 1e-5:
        return put_fixed(b, value, places) if not strip else put_round3(b, value)
    digits = <unsigned long long>whole + (1 if fraction > 0.5 else 0)
    for kept in range(places):  # the decimals, from the last
        n -= 1
        text[n] = <char>(48 + digits % 10)
        digits //= 10
    if strip:
        kept = 40
        while kept > n + 1 and text[kept - 1] == 48:
            kept -= 1
    else:
        kept = 40
    n -= 1
    text[n] = 46  # '.'
    if digits == 0:
        n -= 1
        text[n] = 48
    while digits:
        n -= 1
        text[n] = <char>(48 + digits % 10)
        digits //= 10
    if signbit(value):
        n -= 1
        text[n] = 45  # '-'
    return put(b, text + n, kept - n)


cdef const char* HEX = "0123456789abcdef"
cdef char SHORT_ESCAPES[256]  # the character after the backslash of json's short escapes, else 0
for _character in range(256):  # as json writes them: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`
    _escaped = json.dumps(chr(_character))[1:-1]
    SHORT_ESCAPES[_character] = ord(_escaped[1]) if len(_escaped) == 2 else 0


cdef int put_escaped(Buf* b, const unsigned char* s, Py_ssize_t n) except -1:
    """Bytes taken as Latin-1 characters, escaped as `json.dumps` (ensure_ascii) escapes them, no quotes."""
    cdef Py_ssize_t i, start = 0
    cdef unsigned char c
    cdef char esc[6]
    for i in range(n):
        c = s[i]
        if c >= 32 and c <= 126 and c != 34 and c != 92:
            continue
        if i > start:
            put(b, <const char*>s + start, i - start)
        start = i + 1
        if SHORT_ESCAPES[c]:  # json's two-character escapes
            esc[0], esc[1] = 92, SHORT_ESCAPES[c]
            put(b, esc, 2)
        else:
            esc[0], esc[1], esc[2], esc[3] = 92, 117, 48, 48  # \u00
            esc[4], esc[5] = HEX[c >> 4], HEX[c & 15]
            put(b, esc, 6)
    if n > start:
        put(b, <const char*>s + start, n - start)
    return 0


cdef int put_string(Buf* b, object text) except -1:
    """`json.dumps(text)` of a str (or None: null)."""
    if text is None:
        return puts(b, "null")
    data = json.dumps(text).encode("ascii") if not text.isascii() else None
    if data is not None:
        return put_bytes(b, data)
    raw = text.encode("ascii")
    puts(b, "\"")
    put_escaped(b, <const unsigned char*><const char*>raw, len(raw))
    return puts(b, "\"")


cdef int put_hex(Buf* b, const unsigned char* s, Py_ssize_t n) except -1:
    """`json.dumps(bytes.hex())`."""
    cdef Py_ssize_t i
    cdef char pair[2]
    puts(b, "\"")
    for i in range(n):
        pair[0], pair[1] = HEX[s[i] >> 4], HEX[s[i] & 15]
        put(b, pair, 2)
    return puts(b, "\"")


cdef void* allocate(size_t size) except NULL:
    """`malloc`, or MemoryError."""
    cdef void* memory = malloc(size)
    if memory == NULL:
        raise MemoryError()
    return memory


cdef inline uint32_t be32(const unsigned char* p):
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef int put_options(Buf* b, const unsigned char* o, Py_ssize_t n) except -1:
    """`record.parse_tcp_options` of `o`, as `packet_json` lists them (`_jsonable`), in JSON."""
    cdef Py_ssize_t i = 0, j, size
    cdef int kind
    cdef bint first = True
    puts(b, "[")
    while i < n:
        if not first:
            puts(b, ", ")
        first = False
        kind = o[i]
        if kind == 0:
            puts(b, "[\"EOL\", null]")
            break
        if kind == 1:
            puts(b, "[\"NOP\", null]")
            i += 1
            continue
        if i + 1 >= n or o[i + 1] < 2 or i + o[i + 1] > n:
            puts(b, "[\"malformed\", ")
            put_hex(b, o + i, n - i)
            puts(b, "]")
            break
        size = o[i + 1]
        puts(b, "[")
        put_bytes(b, <bytes>OPTION_NAMES[kind])
        puts(b, ", ")
        if kind == 2 and size == 4:
            put_uint(b, (o[i + 2] << 8) | o[i + 3])
        elif kind == 3 and size == 3:
            put_uint(b, o[i + 2])
        elif kind == 4 and size == 2:
            puts(b, "true")
        elif kind == 8 and size == 10:
            put_field(b, "[", be32(o + i + 2))
            put_field(b, ", ", be32(o + i + 6))
            puts(b, "]")
        elif kind == 5 and (size - 2) % 8 == 0:
            puts(b, "[")
            j = 2
            while j < size:
                if j > 2:
                    puts(b, ", ")
                put_field(b, "[", be32(o + i + j))
                put_field(b, ", ", be32(o + i + j + 4))
                puts(b, "]")
                j += 8
            puts(b, "]")
        else:
            put_hex(b, o + i + 2, size - 2)
        puts(b, "]")
        i += size
    return puts(b, "]")


# --- what is asked once of the Python modules -----------------------------------------------------

cdef list FLAGS = []  # json.dumps(record.flag_letters(bits)) for every flags byte
cdef list OPTION_NAMES = []  # json.dumps of `record._OPTION_NAMES`' name (or "optN") for every kind
cdef char HTTP_STARTS[16][16]  # `tls.HTTP_STARTS`
cdef int HTTP_START_LENGTHS[16]
cdef int N_HTTP_STARTS = 0
cdef Py_ssize_t HTTP_LINE_MAX = 0
cdef bint TLS_TYPE[256]
cdef list TTL_SENTENCES = [None] * 256  # json of ttl_distance's sentence for a TTL, as made
cdef list SYNACK_SENTENCES = [None] * 256  # json of the first of synack_evidence's sentences
cdef list ROUND_TRIP = None  # synack_evidence's second sentence, in pieces around the round trip
cdef list ANSWERED = [None] * 16  # (has data, S, F, R) of the segment answered -> answered_after's pieces
cdef object describe = None
cdef object habit_class = None
cdef int COUNTER_AHEAD = 0, COUNTER_BEHIND = 0
cdef double TIMESTAMP_NOISE = 0.0, ANSWER_SHARE = 0.0
cdef bytes NEXT_STEP = b""
cdef bint READY = False, USABLE = False


cdef dict QUOTED = {}  # a text -> json.dumps of it, as bytes (addresses, the vantage's evidence, explanations:
# a capture's flows share few of each)


cdef bytes quoted(str text):
    found = QUOTED.get(text)
    if found is None:
        if len(QUOTED) >= 65536:
            QUOTED.clear()
        found = QUOTED[text] = json.dumps(text).encode("ascii")
    return <bytes>found


def _pieces(sentence, parts):
    """`sentence` split around `parts`, found in order; None if one is missing."""
    pieces, at = [], 0
    for part in parts:
        found = sentence.find(part, at)
        if found < 0:
            return None
        pieces.append(sentence[at:found])
        at = found + len(part)
    pieces.append(sentence[at:])
    return pieces


def _template(make, first, second, shown):
    """The fixed pieces of the sentences `make(*numbers)` makes, each number written as `shown(number)`
    between them: worked out from `first`, checked against `second`. None if they do not fit."""
    pieces = _pieces(make(*first), [shown(n) for n in first])
    if pieces is None:
        return None
    made = pieces[0] + "".join(shown(n) + piece for n, piece in zip(second, pieces[1:]))
    if made != make(*second):
        return None
    return [json.dumps(piece)[1:-1].encode("ascii") for piece in pieces]


def _milliseconds(seconds):
    return f"{seconds * 1000:.1f}"


cdef void setup():
    """Ask the engine and the record parser once for their words and tables."""
    global READY, USABLE, ROUND_TRIP, describe, habit_class, COUNTER_AHEAD, COUNTER_BEHIND, TIMESTAMP_NOISE
    global ANSWER_SHARE, NEXT_STEP, N_HTTP_STARTS, HTTP_LINE_MAX
    from probe.engine import heuristics as h
    from probe.engine.baseline import TIMESTAMP_NOISE as noise, IpIdHabit
    from probe.engine.verdict import synack_evidence
    from probe.protocol import tls
    from probe.record import PacketRecord, _OPTION_NAMES, flag_letters
    from probe.render.report import next_step_of

    READY = True
    FLAGS[:] = [json.dumps(flag_letters(bits)).encode("ascii") for bits in range(256)]
    OPTION_NAMES[:] = [json.dumps(_OPTION_NAMES.get(kind, f"opt{kind}")).encode("ascii") for kind in range(256)]
    N_HTTP_STARTS = 0
    for start in tls.HTTP_STARTS:
        if N_HTTP_STARTS == 16 or len(start) > 16:
            return  # not USABLE: every flow to the engine
        memcpy(HTTP_STARTS[N_HTTP_STARTS], <const char*><bytes>start, len(start))
        HTTP_START_LENGTHS[N_HTTP_STARTS] = len(start)
        N_HTTP_STARTS += 1
    for kind in range(256):
        TLS_TYPE[kind] = kind in tls.CONTENT_TYPES
    describe, HTTP_LINE_MAX = tls.describe, tls.HTTP_LINE_MAX
    habit_class = IpIdHabit
    COUNTER_AHEAD, COUNTER_BEHIND = IpIdHabit.COUNTER_AHEAD, IpIdHabit.COUNTER_BEHIND
    TIMESTAMP_NOISE, ANSWER_SHARE = noise, h.ANSWER_SHARE
    NEXT_STEP = json.dumps(next_step_of({"verdict": "clean", "direction": None, "hop": None,
                                         "command": "analyze"})).encode("ascii")
    ROUND_TRIP = _template(lambda rtt: synack_evidence(64, rtt)[1], (0.0123456,), (0.0456789,), _milliseconds)
    for key in range(16):
        letters = ("S" if key & 2 else "") + ("F" if key & 4 else "") + ("R" if key & 8 else "") + "A"
        segment = PacketRecord(0.0, "", "", "tcp", 64, 0, True, 0, 0, flags=letters,
                               payload=b"x" if key & 1 else b"")
        text = h.describe_segment(segment)
        ANSWERED[key] = _template(lambda elapsed, rtt: h.answered_after(elapsed, text, rtt),
                                  (0.0123456, 0.0345678), (0.0456789, 0.0789123), _milliseconds)
    USABLE = ROUND_TRIP is not None and all(pieces is not None for pieces in ANSWERED)


cdef bytes ttl_sentence(int ttl):
    """`heuristics.ttl_distance`'s sentence for a packet at the SYN-ACK's TTL, from the function itself."""
    sentence = TTL_SENTENCES[ttl]
    if sentence is None:
        from probe.engine import heuristics as h
        from probe.engine.baseline import Baseline, IpIdHabit
        from probe.record import PacketRecord

        packet = PacketRecord(0.0, "", "", "tcp", ttl, 0, True, 0, 0)
        baseline = Baseline(None, ttl, None, IpIdHabit("unknown", ()), frozenset(), ttl)
        signals = h.ttl_distance(packet, baseline)
        if len(signals) != 1 or signals[0].weight != -1:
            raise RuntimeError("ttl_distance no longer speaks for a packet at the SYN-ACK's TTL")
        sentence = TTL_SENTENCES[ttl] = json.dumps(signals[0].sentence).encode("ascii")
    return <bytes>sentence


cdef bytes synack_sentence(int ttl):
    sentence = SYNACK_SENTENCES[ttl]
    if sentence is None:
        from probe.engine.verdict import synack_evidence

        sentence = SYNACK_SENTENCES[ttl] = json.dumps(synack_evidence(ttl, None)[0]).encode("ascii")
    return <bytes>sentence


cdef int put_pieces(Buf* b, list pieces, double* values, int count) except -1:
    """A template's pieces with `values` (seconds, written as milliseconds with one decimal) between them."""
    cdef int i
    puts(b, "\"")
    put_bytes(b, <bytes>pieces[0])
    for i in range(count):
        put_decimal(b, values[i] * 1000, 1, False)
        put_bytes(b, <bytes>pieces[i + 1])
    return puts(b, "\"")


# --- one flow ----------------------------------------------------------------------------------

cdef struct Packet:
    double t
    const unsigned char* ip
    int l4, offset, end  # the TCP header's start, its length; where the segment's captured bytes end
    int ttl, ip_id, df, tos, flags, win, sport, dport
    uint32_t seq, ack
    long long length  # the payload's length on the wire (`PacketRecord.length`)
    int ours
    int cause  # `baseline.causes`: the index of the packet of ours it answers, or -1


cdef inline uint32_t seq_end(Packet* p):
    """`baseline.seq_end`."""
    return p.seq + <uint32_t>p.length + (1 if p.flags & SYN else 0) + (1 if p.flags & FIN else 0)


cdef struct Ends:  # `causes`' `by_end`: the end of a segment of ours -> the first one ending there
    uint32_t* keys
    int* values
    int mask


cdef int ends_get(Ends* e, uint32_t key):
    cdef int slot = (key * <uint32_t>2654435761U) & e.mask
    while e.values[slot] >= 0:
        if e.keys[slot] == key:
            return e.values[slot]
        slot = (slot + 1) & e.mask
    return -1


cdef void ends_setdefault(Ends* e, uint32_t key, int value):
    cdef int slot = (key * <uint32_t>2654435761U) & e.mask
    while e.values[slot] >= 0:
        if e.keys[slot] == key:
            return
        slot = (slot + 1) & e.mask
    e.keys[slot], e.values[slot] = key, value


cdef int compare_ints(const void* a, const void* b) noexcept nogil:
    return (<const int*>a)[0] - (<const int*>b)[0]


cdef int classify(int* ids, int n, int* first, int* last):
    """`baseline.classify_ip_ids`: 0 unknown, 1 zero, 2 counter (`first` and `last` set), 3 random."""
    cdef int i, m = 0, low, high, mid, start = 0
    cdef long long total = 0, key, best = 0
    cdef int* counting
    cdef int* below
    cdef bint all_zero = True, counter
    if n < 2:
        return 0
    for i in range(n):
        if ids[i] != 0:
            all_zero = False
    if all_zero:
        return 1
    counting = below = NULL
    try:
        counting, below = <int*>allocate(n * sizeof(int)), <int*>allocate(n * sizeof(int))
        for i in range(n):
            if ids[0] != 0 or ids[i] != 0:
                counting[m] = ids[i]
                m += 1
        memcpy(below, counting, m * sizeof(int))
        qsort(below, m, sizeof(int), compare_ints)
        for i in range(m):
            total += below[i]
        for i in range(m):  # min(counting, key=...): the first of the smallest
            low, high = 0, m
            while low < high:  # bisect_left(below, counting[i])
                mid = (low + high) // 2
                if below[mid] < counting[i]:
                    low = mid + 1
                else:
                    high = mid
            key = total - <long long>m * counting[i] + 65536 * <long long>low
            if i == 0 or key < best:
                best, start = key, counting[i]
        for i in range(m):  # sorted by (i - start) % 65536: the keys, then back
            below[i] = ((counting[i] - start) % 65536 + 65536) % 65536
        qsort(below, m, sizeof(int), compare_ints)
        counter = m >= 2
        for i in range(1, m):
            if not (0 < below[i] - below[i - 1] <= 2000):
                counter = False
                break
        if counter:
            first[0], last[0] = (below[0] + start) % 65536, (below[m - 1] + start) % 65536
            return 2
        return 0 if m < 2 else 3
    finally:
        free(counting)
        free(below)


cdef int put_description(Buf* b, const unsigned char* payload, Py_ssize_t n) except -1:
    """`json.dumps(tls.describe(payload))`: an HTTP message's first line written here as `describe`
    cuts it (up to its first CR LF, then its first LF, at most HTTP_LINE_MAX bytes), TLS records by
    `describe` itself, and "" when the payload starts as neither."""
    cdef int k
    cdef Py_ssize_t end = 0
    for k in range(N_HTTP_STARTS):
        if n >= HTTP_START_LENGTHS[k] and memcmp(payload, HTTP_STARTS[k], HTTP_START_LENGTHS[k]) == 0:
            while end < n and end <= HTTP_LINE_MAX and payload[end] != 10:  # the first LF (a CR before it goes too)
                end += 1
            if end > 0 and end < n and payload[end - 1] == 13:
                end -= 1
            puts(b, "\"")
            put_escaped(b, payload, end if end < HTTP_LINE_MAX else HTTP_LINE_MAX)
            return puts(b, "\"")
    if n >= 5 and TLS_TYPE[payload[0]] and payload[1] == 3:
        return put_string(b, describe(PyBytes_FromStringAndSize(<const char*>payload, n)))
    return puts(b, "\"\"")


cdef int put_payload(Buf* b, const unsigned char* payload, Py_ssize_t n) except -1:
    """`packet_json`'s fields of a segment with a payload (`n` bytes captured): its first 64 bytes
    as Latin-1 text, and what it is (`tls.describe`)."""
    puts(b, ", \"payload_head\": \"")
    put_escaped(b, payload, n if n < 64 else 64)
    puts(b, "\", \"info\": ")
    return put_description(b, payload, n)


def flow_json(const unsigned char[::1] raw, str client, int client_port, str server, int server_port, Py_ssize_t elided,
              str vantage_evidence, double rtt_ms, str explanation):
    """The `--json` text of an ordinary flow (see the module's docstring) from its kept packets
    (`raw`: `flows.OpenFlow.raw`'s layout, every packet's bytes there), as UTF-8 bytes; None when the
    flow has anything this does not write as the engine would."""
    if not READY:
        setup()
    if not USABLE:
        return None
    cdef Py_ssize_t size = raw.shape[0], position = 0
    cdef const unsigned char* data = &raw[0] if size else NULL
    cdef int count = 0, capacity = 64, i
    cdef Packet* packets = <Packet*>allocate(capacity * sizeof(Packet))
    cdef Packet* grown
    cdef Buf b
    cdef Ends ends
    b.data, b.size, b.cap = NULL, 0, 0
    ends.keys, ends.values = NULL, NULL
    try:
        while position < size:  # the packets, as `record.parse_ip` reads them (IPv4 TCP only)
            if position + 12 > size:
                return None
            if count == capacity:
                capacity *= 2
                grown = <Packet*>realloc(packets, capacity * sizeof(Packet))
                if grown == NULL:
                    raise MemoryError()
                packets = grown
            if not read_packet(data + position, size - position, &packets[count], &position):
                return None
            count += 1
        if count == 0:
            return None
        text = render(packets, count, &b, &ends, client, client_port, server, server_port, elided,
                      vantage_evidence, rtt_ms, explanation)
        return text
    finally:
        free(packets)
        free(b.data)
        free(ends.keys)
        free(ends.values)


cdef bint read_packet(const unsigned char* at, Py_ssize_t left, Packet* p, Py_ssize_t* position):
    """One kept packet (`flows._KEPT`: time, length, then the bytes); False when `parse_ip` would not
    make it a complete IPv4 TCP record (or the packet is kept by its place in the file)."""
    cdef uint32_t n
    cdef const unsigned char* ip
    cdef int ihl, ip_len, frag, end, l4len, offset
    memcpy(&p.t, at, 8)
    memcpy(&n, at + 8, 4)
    if n & 0x80000000u or 12 + <Py_ssize_t>n > left:
        return False
    position[0] += 12 + n
    ip = at + 12
    p.ip = ip
    if n < 20 or ip[0] >> 4 != 4:
        return False
    ihl = (ip[0] & 0x0F) * 4
    if ihl < 20 or <int>n < ihl:
        return False
    p.tos, ip_len, p.ip_id = ip[1], (ip[2] << 8) | ip[3], (ip[4] << 8) | ip[5]
    frag, p.ttl = (ip[6] << 8) | ip[7], ip[8]
    if ip[9] != 6 or frag & 0x1FFF:
        return False
    p.df = 1 if frag & 0x4000 else 0
    end = (<int>n if <int>n < ip_len else ip_len) if ip_len >= ihl else <int>n
    l4len = end - ihl
    if l4len < 20:
        return False
    offset = (ip[ihl + 12] >> 4) * 4
    if offset < 20 or offset > l4len:
        return False
    p.l4, p.offset, p.end = ihl, offset, end
    p.sport, p.dport = (ip[ihl] << 8) | ip[ihl + 1], (ip[ihl + 2] << 8) | ip[ihl + 3]
    p.seq, p.ack = be32(ip + ihl + 4), be32(ip + ihl + 8)
    p.flags, p.win = ip[ihl + 13], (ip[ihl + 14] << 8) | ip[ihl + 15]
    p.length = (l4len - offset) + (ip_len - ihl - l4len if ip_len - ihl > l4len else 0)
    return True


cdef object render(Packet* packets, int count, Buf* b, Ends* ends, str client, int client_port, str server,
                   int server_port, Py_ssize_t elided, str vantage_evidence, double rtt_ms, str explanation):
    cdef int i, synack = -1, syn = -1, first_sent = -1, size, kind = 0, id_first = 0, id_last = 0, n_ids = 0
    cdef int cause, key, second_index
    cdef Packet* p
    cdef Packet* c
    cdef Packet* s
    cdef double t_ms
    cdef const unsigned char* ours_from
    cdef double handshake, rtt, rtt_spread, soonest, elapsed, fastest_one, fastest_two
    cdef double values[2]
    cdef double* fastest = NULL
    cdef int* ids = NULL
    cdef bint has_soonest, fires
    cdef uint32_t into, span
    # who sent what: the first packet is the client's SYN (the pre-judgement made sure)
    ours_from = packets[0].ip
    if memcmp(ours_from + 12, ours_from + 16, 4) == 0 and packets[0].sport == packets[0].dport:
        return None  # both ends one: the engine would call every packet ours and theirs
    for i in range(count):
        p = &packets[i]
        if memcmp(p.ip + 12, ours_from + 12, 8) == 0 and p.sport == packets[0].sport and p.dport == packets[0].dport:
            p.ours = 1
        elif memcmp(p.ip + 12, ours_from + 16, 4) == 0 and memcmp(p.ip + 16, ours_from + 12, 4) == 0 \
                and p.sport == packets[0].dport and p.dport == packets[0].sport:
            p.ours = 0
        else:
            return None
    if not packets[0].ours or packets[0].flags != SYN:
        return None
    # `baseline.causes`, for the packets in the server's name (each must have its cause by end)
    size = 16
    while size < 2 * count:
        size *= 2
    ends.keys, ends.values = <uint32_t*>allocate(size * sizeof(uint32_t)), <int*>allocate(size * sizeof(int))
    ends.mask = size - 1
    for i in range(size):
        ends.values[i] = -1
    for i in range(count):
        p = &packets[i]
        p.cause = first_sent
        if not p.ours:
            if first_sent < 0 or not p.flags & ACK:
                return None
            p.cause = ends_get(ends, p.ack)
            if p.cause < 0:
                return None  # the engine's range search (`SeqIndex`): left to it
        if p.ours:
            if first_sent < 0:
                first_sent = i
            ends_setdefault(ends, seq_end(p), i)
        if syn < 0 and p.ours and p.flags == SYN:
            syn = i
        if synack < 0 and not p.ours and p.flags & SYN and p.flags & ACK and syn >= 0 \
                and p.ack == packets[syn].seq + 1:
            synack = i
    if synack < 0:
        return None
    # `build_baseline`: one SYN before the SYN-ACK, every later packet in its name a member at its TTL and DF
    for i in range(synack):
        if not packets[i].ours or (i != syn and packets[i].flags == SYN):
            return None
    s = &packets[synack]
    handshake = s.t - packets[syn].t
    if handshake < 0:
        handshake = 0.0
    try:
        fastest, ids = <double*>allocate(count * sizeof(double)), <int*>allocate(count * sizeof(int))
        for i in range(count):
            fastest[i] = -1.0
        for i in range(synack + 1, count):  # `_round_trip_answered_twice`
            p = &packets[i]
            if p.ours:
                continue
            if p.ttl != s.ttl or p.df != s.df or p.flags & (RST | SYN):
                return None  # not a member, or `_farther_responder`'s: left to the engine
            elapsed = p.t - packets[p.cause].t
            if elapsed >= 0 and (fastest[p.cause] < 0 or elapsed < fastest[p.cause]):
                fastest[p.cause] = elapsed
        fastest_one = fastest_two = -1.0
        for i in range(count):
            if fastest[i] < 0:
                continue
            if fastest_one < 0 or fastest[i] < fastest_one:
                fastest_two, fastest_one = fastest_one, fastest[i]
            elif fastest_two < 0 or fastest[i] < fastest_two:
                fastest_two = fastest[i]
        rtt = handshake if fastest_two < 0 or handshake < fastest_two else fastest_two
        ids[0] = s.ip_id
        n_ids = 1
        for i in range(synack + 1, count):  # the members, and the round trips they show
            p = &packets[i]
            if p.ours:
                continue
            c = &packets[p.cause]
            if p.t - c.t < rtt * 0.5:
                return None  # not a member: left to the engine
            ids[n_ids] = p.ip_id
            n_ids += 1
            if seq_end(c) == p.ack and c.length and p.t - c.t < rtt:
                rtt = p.t - c.t
        rtt_spread = handshake - rtt
        soonest = rtt - (rtt * 0.5 if rtt * 0.5 > rtt_spread else rtt_spread) - TIMESTAMP_NOISE
        has_soonest = soonest > 0
        kind = classify(ids, n_ids, &id_first, &id_last)
        habit = id_pieces = None
        if not isfinite(rtt) or not isfinite(packets[0].t) or not isfinite(rtt_ms):
            return None
        # the flow, as `flow_json_text(analyzed_flow_json(result))`
        puts(b, "{\n  \"client\": {\"address\": ")
        put_bytes(b, quoted(client))
        put_field(b, ", \"port\": ", client_port)
        puts(b, "},\n  \"server\": {\"address\": ")
        put_bytes(b, quoted(server))
        put_field(b, ", \"port\": ", server_port)
        puts(b, "},\n  \"vantage\": \"client\",\n  \"vantage_evidence\": ")
        put_bytes(b, quoted(vantage_evidence))
        puts(b, ",\n  \"start\": ")
        put_repr(b, packets[0].t)
        puts(b, ",\n  \"verdict\": \"clean\",\n  \"direction\": null,\n  \"hop\": null,\n  \"rtt_ms\": ")
        put_repr(b, rtt_ms)
        puts(b, ",\n  \"packets\": [\n    ")
        client_json, server_json = quoted(client), quoted(server)
        for i in range(count):
            p = &packets[i]
            if i:
                puts(b, ",\n    ")
            if b.size + 512 + len(client_json) + len(server_json) > b.cap:
                grow(b, 512 + len(client_json) + len(server_json))
            j_packet_start(b, i + 1, p.ours)
            t_ms = (p.t - packets[0].t) * 1000
            if not fabs(t_ms) < 1e9:
                return None  # `put_round3`'s short form would not be `repr`'s
            put_decimal(b, t_ms, 3, True)
            flags = <bytes>FLAGS[p.flags]
            source, destination = (client_json, server_json) if p.ours else (server_json, client_json)
            j_packet_fields(b, source, len(source), destination, len(destination), p.ttl, p.ip_id, p.df, p.tos,
                            p.sport, p.dport, flags, len(flags), p.seq, p.ack, p.win, p.length)
            put_options(b, p.ip + p.l4 + 20, p.offset - 20)
            if p.length:
                put_payload(b, p.ip + p.l4 + p.offset, p.end - p.l4 - p.offset)
            if p.ours:
                puts(b, ", \"origin\": \"self\", \"confidence\": \"high\", \"evidence\": []}")
                continue
            if i == synack:
                puts(b, ", \"origin\": \"server\", \"confidence\": \"high\", \"evidence\": [")
                put_bytes(b, synack_sentence(p.ttl))
                puts(b, ", ")
                values[0] = rtt
                put_pieces(b, ROUND_TRIP, values, 1)
                puts(b, "]}")
                continue
            c = &packets[p.cause]
            elapsed = p.t - c.t
            if has_soonest and elapsed < soonest:
                return None  # sooner than the path allows: the engine blames it
            fires = False
            if kind == 2:
                # `baseline.counter_keeps`: inside the run from the first IP-ID to the last, widened
                into = ((p.ip_id - id_first + COUNTER_BEHIND) % 65536 + 65536) % 65536
                span = ((id_last - id_first) % 65536 + 65536) % 65536
                fires = into > span + COUNTER_BEHIND + COUNTER_AHEAD
            if fires:
                puts(b, ", \"origin\": \"server\", \"confidence\": \"medium\", \"evidence\": [")
            else:
                puts(b, ", \"origin\": \"server\", \"confidence\": \"high\", \"evidence\": [")
            put_bytes(b, ttl_sentence(p.ttl))
            if elapsed >= rtt * ANSWER_SHARE:
                key = (1 if c.length else 0) | (2 if c.flags & SYN else 0) | (4 if c.flags & FIN else 0) \
                    | (8 if c.flags & RST else 0)
                puts(b, ", ")
                values[0], values[1] = elapsed, rtt
                put_pieces(b, <list>ANSWERED[key], values, 2)
            if fires:
                if habit is None:  # `ip_id_habit`'s sentence in pieces around the IP-ID (else asked each time)
                    habit = habit_class("counter", (id_first, id_last))
                    id_pieces = _template(habit.judge, (p.ip_id,), (((id_first - COUNTER_BEHIND - 1) % 65536 + 65536) % 65536,), str)
                puts(b, ", ")
                if id_pieces is None:
                    put_string(b, habit.judge(p.ip_id))
                else:
                    puts(b, "\"")
                    put_bytes(b, <bytes>id_pieces[0])
                    put_uint(b, p.ip_id)
                    put_bytes(b, <bytes>id_pieces[1])
                    puts(b, "\"")
            puts(b, "]}")
        puts(b, "\n  ],\n  \"explanation\": ")
        put_bytes(b, quoted(explanation))
        puts(b, ",\n  \"next_step\": ")
        put_bytes(b, NEXT_STEP)
        if elided:
            put_field(b, ",\n  \"elided_packets\": ", elided)
        puts(b, "\n}")
        return PyBytes_FromStringAndSize(b.data, b.size)
    finally:
        free(fastest)
        free(ids)


def decimal_text(double value, int places, bint strip):
    """`put_decimal`'s text, for the tests: `f"{value:.{places}f}"`, or `repr(round(value, places))`."""
    cdef Buf b
    b.data, b.size, b.cap = NULL, 0, 0
    try:
        put_decimal(&b, value, places, strip)
        return PyBytes_FromStringAndSize(b.data, b.size).decode("ascii")
    finally:
        free(b.data)


# --- the packets of a judged flow ------------------------------------------------------------------

def packets_text(list packets, attributions, str client, int client_port, str server, int server_port,
                 bint server_seat, fallback):
    """The `"packets"` value of a flow the engine judged, as `render.flows.flow_json_text` writes it:
    `"[\\n    " + ",\\n    ".join(json.dumps(packet_json(n, packet, t0, flow, attribution)) for each)
    + "\\n  ]"`, as a str. A TCP segment over IPv4 or IPv6 whose fields are of the types `packet_json`
    is made for is written here; any other packet (ICMP, a value of another type, a time too large for
    `put_decimal`'s short form) is `fallback(n, packet, attribution)`'s text, `json.dumps` of its
    `packet_json`. `server_seat`: the flow was captured at the server (`render.report._direction`)."""
    if not READY:
        setup()
    cdef Buf b
    cdef Py_ssize_t n, mark
    cdef double t0
    cdef bint fast = describe is not None  # `setup` read `tls.HTTP_STARTS` (for `put_description`)
    b.data, b.size, b.cap = NULL, 0, 0
    try:
        puts(&b, "[\n    ")
        t0 = packets[0].t if packets else 0.0
        for n in range(min(len(packets), len(attributions))):  # `zip`'s
            if n:
                puts(&b, ",\n    ")
            mark = b.size
            packet, attribution = packets[n], attributions[n]
            if not fast or not put_packet(&b, n + 1, packet, attribution, t0, client, client_port, server, server_port,
                              server_seat):
                b.size = mark
                put_bytes(&b, (<str>fallback(n + 1, packet, attribution)).encode("ascii"))
        puts(&b, "\n  ]")
        return PyBytes_FromStringAndSize(b.data, b.size).decode("ascii")
    finally:
        free(b.data)


cdef inline bint is_int(object value):
    return type(value) is int


cdef int put_packet(Buf* b, Py_ssize_t n, object p, object a, double t0, str client, int client_port, str server,
                    int server_port, bint server_seat) except -1:
    """`json.dumps(render.report.packet_json(...))` of one TCP segment; 0 (part written) when it is
    not one this writes."""
    cdef double t_ms
    cdef object version, payload, evidence
    cdef bint sent
    cdef Py_ssize_t i
    if p.proto != "tcp" or type(p.t) is not float:
        return 0
    version = p.version
    if not (is_int(version) and (version == 4 or version == 6)):
        return 0
    ttl, ip_id, df, tos, sport, dport = p.ttl, p.ip_id, p.df, p.tos, p.sport, p.dport
    seq, ack, win, flags, payload = p.seq, p.ack, p.win, p.flags, p.payload
    if not (is_int(ttl) and is_int(ip_id) and type(df) is bool and is_int(tos) and is_int(sport) and is_int(dport)
            and is_int(seq) and is_int(ack) and is_int(win) and type(flags) is str and type(payload) is bytes
            and type(p.src) is str and type(p.dst) is str and type(a.origin) is str
            and type(a.confidence) is str):
        return 0
    t_ms = (<double>p.t - t0) * 1000
    if not fabs(t_ms) < 1e9:
        return 0  # `put_round3`'s short form would not be `repr`'s
    sent = p.src == client and sport == client_port and p.dst == server and dport == server_port  # `sent_by_client`
    if server_seat:
        sent = not sent
    if b.size + 64 > b.cap:
        grow(b, 64)
    j_packet_start(b, n, sent)
    put_decimal(b, t_ms, 3, True)
    puts(b, ", \"proto\": \"tcp\", \"src\": ")
    put_bytes(b, quoted(p.src))
    puts(b, ", \"dst\": ")
    put_bytes(b, quoted(p.dst))
    put_field(b, ", \"ttl\": ", ttl)
    put_field(b, ", \"ip_id\": ", ip_id)
    puts(b, ", \"df\": true" if df else ", \"df\": false")
    put_field(b, ", \"tos\": ", tos)
    if version == 6:
        if not is_int(p.flow_label):
            return 0
        put_field(b, ", \"version\": 6, \"flow_label\": ", p.flow_label)
    put_field(b, ", \"sport\": ", sport)
    put_field(b, ", \"dport\": ", dport)
    puts(b, ", \"flags\": ")
    put_bytes(b, quoted(flags))
    put_field(b, ", \"seq\": ", seq)
    put_field(b, ", \"ack\": ", ack)
    put_field(b, ", \"win\": ", win)
    length = p.length
    if not is_int(length):
        return 0
    put_field(b, ", \"len\": ", length)
    puts(b, ", \"options\": [")
    for i, option in enumerate(p.options):
        if type(option) is not tuple or len(option) != 2 or type(option[0]) is not str:
            return 0
        puts(b, ", [" if i else "[")
        put_string(b, option[0])
        puts(b, ", ")
        if not put_jsonable(b, option[1]):
            return 0
        puts(b, "]")
    puts(b, "]")
    if length:
        put_payload(b, <const unsigned char*><const char*>payload, len(payload))
    puts(b, ", \"origin\": ")
    put_bytes(b, quoted(a.origin))
    puts(b, ", \"confidence\": ")
    put_bytes(b, quoted(a.confidence))
    puts(b, ", \"evidence\": [")
    evidence = a.evidence
    if type(evidence) is not tuple and type(evidence) is not list:
        return 0
    for i, sentence in enumerate(evidence):
        if type(sentence) is not str:
            return 0
        if i:
            puts(b, ", ")
        put_string(b, sentence)
    puts(b, "]}")
    return 1


cdef int put_jsonable(Buf* b, object value) except -1:
    """`json.dumps(packet_json's _jsonable(value))` for an option's value: None, a bool, an int, bytes
    (in hex) or a tuple of them; 0 for anything else."""
    if value is None:
        puts(b, "null")
    elif value is True:
        puts(b, "true")
    elif value is False:
        puts(b, "false")
    elif type(value) is int:
        if not -(1 << 62) < value < (1 << 62):
            return 0
        put_int(b, value)
    elif type(value) is bytes:
        put_hex(b, <const unsigned char*><const char*>value, len(value))
    elif type(value) is tuple:
        puts(b, "[")
        for i, item in enumerate(value):
            if i:
                puts(b, ", ")
            if not put_jsonable(b, item):
                return 0
        puts(b, "]")
    else:
        return 0
    return 1
