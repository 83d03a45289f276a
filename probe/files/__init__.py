"""Captures taken elsewhere: pcap and pcapng in (`pcap`), captures pasted as text (`text`), the
flows of a file judged one at a time in bounded memory (`flows`, with the pre-judgement of
ordinary flows in `ordinary` and the compiled reader `_fastscan`), captures that hold a trace
(`traced`), and two ends of the same traffic paired (`pair`).

May import: the shared vocabulary, `probe.engine`, and itself. Never the network, jobs, render
or commands.
"""
