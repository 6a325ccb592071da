"""meshd: one node of a peer-to-peer S3 data proxy mesh.

Start reading at `meshd.node.Node`, the composition root.
"""
