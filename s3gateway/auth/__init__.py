"""Request authentication: SigV4 and SigV2 (headers and presigned) and aws-chunked payloads."""
