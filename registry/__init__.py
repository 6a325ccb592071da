"""The small central registry: identities and access keys (later: permissions,
rules, locality). By default it is embedded in the node, in its data dir."""
