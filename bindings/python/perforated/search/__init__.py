"""Choosing what to perforate or decompose: impact estimation (:mod:`.impact`, SPEC §4.4), the greedy
per-layer search against measured time (:mod:`.greedy`, SPEC §6) and low-rank acceleration with its
combination with perforation (:mod:`.lowrank`, SPEC §10). Each module is also a command
(``python -m perforated.search.greedy ...``)."""
