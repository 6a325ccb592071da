"""Request authentication: SigV4 (headers and presigned) and aws-chunked payloads."""
