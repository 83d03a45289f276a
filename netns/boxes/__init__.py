"""Middleboxes for the lab: each module runs in a router namespace and imitates one kind of
real device (`python3 -m netns.boxes.NAME --help`). Shared plumbing is in `_common`."""

BOXES = ("firewall", "tap", "swallow", "blockpage", "silentdrop", "icmp", "ttlcopy", "copycat",
         "ttlprobe", "proxy", "lb", "lossy",
         "gfwdup", "henan", "quantum", "mimicpage", "preempt", "intercept", "residual")
