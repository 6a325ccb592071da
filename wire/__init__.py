"""Wire formats and protocol primitives shared by layers that must not import
one another (the S3 edge and the s3 backend both speak SigV4)."""
