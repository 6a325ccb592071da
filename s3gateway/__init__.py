"""The S3 edge: routing, SigV4 auth, XML and error mapping.

It translates S3 requests into calls on `meshd.objects.ObjectService` and knows
nothing of disks or peers. Start at `s3gateway.app.make_app`.
"""
