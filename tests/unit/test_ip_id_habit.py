"""The server's IP-ID habit (`baseline.IpIdHabit.judge`): a counter's run holds every packet of the
server's own, early or late, and a number outside it still breaks the habit."""

from probe.engine.baseline import IpIdHabit, classify_ip_ids


def long_download(start: int, packets: int) -> list[int]:
    """A Linux server's per-connection counter: SYN-ACK 0, then one more per packet."""
    return [0] + [(start + n) % 65536 for n in range(packets)]


def test_the_first_packets_of_a_long_download_keep_the_habit():
    # the known false positive: judged against the last IP-ID only, the first 4,900 of these were
    # "IP-ID N, the server counts up from F (last L)", on a clean download
    ids = long_download(1000, 5000)
    habit = classify_ip_ids(ids)
    assert habit.kind == "counter"
    assert [i for i in ids[1:] if habit.judge(i)] == []


def test_a_counter_that_wraps_keeps_its_packets_on_both_sides_of_zero():
    habit = classify_ip_ids(long_download(64000, 4000))
    assert habit.kind == "counter" and habit.ids[0] == 64000
    assert habit.judge(64000) is None and habit.judge(65535) is None and habit.judge(2463) is None


def test_a_number_outside_the_run_breaks_it():
    habit = classify_ip_ids(long_download(1000, 5000))  # the run is 1000..5999
    assert habit.judge(1000 - IpIdHabit.COUNTER_BEHIND) is None
    assert habit.judge(1000 - IpIdHabit.COUNTER_BEHIND - 1) == \
        f"IP-ID {1000 - IpIdHabit.COUNTER_BEHIND - 1}, the server counts up from 1000 (last 5999)"
    assert habit.judge(5999 + IpIdHabit.COUNTER_AHEAD) is None
    assert habit.judge(5999 + IpIdHabit.COUNTER_AHEAD + 1) is not None
    assert habit.judge(40000) is not None


def test_a_zero_habit_is_unchanged():
    habit = classify_ip_ids([0, 0, 0])
    assert habit.judge(0) is None
    assert habit.judge(7) == "IP-ID 7, the server's packets all carry IP-ID 0"
