"""`make demo`: the exporter watching two embedded simulators.

It lives beside the two packages, not in either: it needs both the exporter (the service) and
the simulator (the stand-in CloudStack), while neither of them may depend on the other beyond
the simulator's use of the exporter's request signing. It is not part of the distribution.
"""
