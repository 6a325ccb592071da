"""Membership gossip, metadata anti-entropy, peer transfer and replication rules.

Not built yet: a node runs alone. Version ids already carry (HLC timestamp,
origin node) so catalogs can be merged without migration when this lands.
"""
