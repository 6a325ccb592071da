"""S3 error responses: one class per S3 error code, rendered in one place.

As in Swift's s3response.py, an error's code defaults to its class name. Domain
errors from the object service are mapped to these by `from_domain`, the only
place where meshd's own errors meet S3 codes.
"""

from __future__ import annotations

from meshd import errors as domain


class S3Error(Exception):
    status = 400
    message = "An error occurred."

    def __init__(self, message: str | None = None, **fields: str) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.fields = fields  # extra elements of the error document (BucketName, Key, ...)
        self.headers: dict[str, str] = {}

    @property
    def code(self) -> str:
        return type(self).__name__


def _error(name: str, status: int, message: str) -> type[S3Error]:
    return type(name, (S3Error,), {"status": status, "message": message})


AccessDenied = _error("AccessDenied", 403, "Access Denied")
AccessForbidden = _error("AccessForbidden", 403, "CORSResponse: This CORS request is not allowed.")
AuthorizationHeaderMalformed = _error(
    "AuthorizationHeaderMalformed", 400, "The authorization header is malformed.")
AuthorizationQueryParametersError = _error(
    "AuthorizationQueryParametersError", 400, "Error parsing the X-Amz-Credential parameter.")
BadDigest = _error("BadDigest", 400, "The Content-MD5 you specified did not match what we received.")
BucketAlreadyExists = _error(
    "BucketAlreadyExists", 409, "The requested bucket name is not available.")
BucketAlreadyOwnedByYou = _error(
    "BucketAlreadyOwnedByYou", 409,
    "Your previous request to create the named bucket succeeded and you already own it.")
BucketNotEmpty = _error("BucketNotEmpty", 409, "The bucket you tried to delete is not empty.")
EntityTooLarge = _error(
    "EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed object size.")
EntityTooSmall = _error(
    "EntityTooSmall", 400, "Your proposed upload is smaller than the minimum allowed object size.")
ExpiredToken = _error("ExpiredToken", 400, "The provided token has expired.")
IncompleteBody = _error(
    "IncompleteBody", 400, "You did not provide the number of bytes specified by the Content-Length HTTP header.")
InternalError = _error(
    "InternalError", 500, "We encountered an internal error. Please try again.")
InvalidAccessKeyId = _error(
    "InvalidAccessKeyId", 403, "The AWS Access Key Id you provided does not exist in our records.")
InvalidArgument = _error("InvalidArgument", 400, "Invalid Argument")
InvalidBucketName = _error("InvalidBucketName", 400, "The specified bucket is not valid.")
InvalidDigest = _error("InvalidDigest", 400, "The Content-MD5 you specified is not valid.")
InvalidLocationConstraint = _error(
    "InvalidLocationConstraint", 400, "The specified location-constraint is not valid.")
InvalidPart = _error(
    "InvalidPart", 400,
    "One or more of the specified parts could not be found. The part may not have been "
    "uploaded, or the specified entity tag may not match the part's entity tag.")
InvalidPartOrder = _error(
    "InvalidPartOrder", 400, "The list of parts was not in ascending order.")
InvalidRange = _error("InvalidRange", 416, "The requested range is not satisfiable")
InvalidRequest = _error("InvalidRequest", 400, "Invalid Request")
InvalidStorageClass = _error("InvalidStorageClass", 400, "The storage class you specified is not valid.")
InvalidTag = _error("InvalidTag", 400, "The tag provided was not a valid tag.")
InvalidURI = _error("InvalidURI", 400, "Couldn't parse the specified URI.")
KeyTooLongError = _error("KeyTooLongError", 400, "Your key is too long.")
MalformedXML = _error(
    "MalformedXML", 400,
    "The XML you provided was not well-formed or did not validate against our published schema.")
MalformedTrailerError = _error(
    "MalformedTrailerError", 400, "The request contained trailing data that was not well-formed.")
MaxMessageLengthExceeded = _error(
    "MaxMessageLengthExceeded", 400, "Your request was too big.")
MetadataTooLarge = _error(
    "MetadataTooLarge", 400, "Your metadata headers exceed the maximum allowed metadata size.")
MethodNotAllowed = _error(
    "MethodNotAllowed", 405, "The specified method is not allowed against this resource.")
MissingContentLength = _error(
    "MissingContentLength", 411, "You must provide the Content-Length HTTP header.")
MissingSecurityHeader = _error(
    "MissingSecurityHeader", 400, "Your request is missing a required header.")
NoSuchBucket = _error("NoSuchBucket", 404, "The specified bucket does not exist.")
NoSuchCORSConfiguration = _error(
    "NoSuchCORSConfiguration", 404, "The CORS configuration does not exist")
NoSuchKey = _error("NoSuchKey", 404, "The specified key does not exist.")
NoSuchUpload = _error(
    "NoSuchUpload", 404,
    "The specified upload does not exist. The upload ID may be invalid, or the upload may "
    "have been aborted or completed.")
NoSuchVersion = _error(
    "NoSuchVersion", 404, "The specified version does not exist.")
NotImplemented_ = _error(
    "NotImplemented", 501, "A header you provided implies functionality that is not implemented.")
PreconditionFailed = _error(
    "PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold")
RequestTimeTooSkewed = _error(
    "RequestTimeTooSkewed", 403,
    "The difference between the request time and the current time is too large.")
RequestTimeout = _error(
    "RequestTimeout", 400,
    "Your socket connection to the server was not read from or written to within the timeout period.")
RequestHeaderSectionTooLarge = _error(
    "RequestHeaderSectionTooLarge", 400, "Your request header section exceeds the maximum allowed size.")
ServiceUnavailable = _error("ServiceUnavailable", 503, "Please reduce your request rate.")
SignatureDoesNotMatch = _error(
    "SignatureDoesNotMatch", 403,
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method.")
SlowDown = _error("SlowDown", 503, "Please reduce your request rate.")
InsufficientStorage = _error(
    "InsufficientStorage", 507, "There is not enough space left on the storage backend.")
UnexpectedContent = _error("UnexpectedContent", 400, "This request does not support content.")
XAmzContentSHA256Mismatch = _error(
    "XAmzContentSHA256Mismatch", 400,
    "The provided 'x-amz-content-sha256' header does not match what was computed.")


class NotModified(S3Error):
    """304 is not an error document, but travels the same path."""

    status = 304
    message = "Not Modified"


def from_domain(exc: domain.MeshdError) -> S3Error:
    """Map an object-service error to the S3 error a client expects."""
    match exc:
        case domain.BucketNotFound():
            return NoSuchBucket(BucketName=exc.bucket)
        case domain.KeyNotFound() if exc.key is not None:
            return NoSuchKey(Key=exc.key)
        case domain.KeyNotFound():
            return NoSuchKey()
        case domain.InvalidVersionId():
            return InvalidArgument("Invalid version id specified", ArgumentName="versionId",
                                   ArgumentValue=exc.text)
        case domain.VersionNotFound():
            return NoSuchVersion(VersionId=exc.version_id)
        case domain.UploadNotFound():
            return NoSuchUpload(UploadId=exc.upload_id)
        case domain.DeleteMarkerHit() if exc.addressed:
            err: S3Error = MethodNotAllowed()
            err.headers = {"x-amz-delete-marker": "true", "x-amz-version-id": exc.version_id,
                           "Allow": "DELETE"}
            return err
        case domain.DeleteMarkerHit():
            err = NoSuchKey()
            err.headers = {"x-amz-delete-marker": "true", "x-amz-version-id": exc.version_id}
            return err
        case domain.BucketExists() if exc.owned_by_caller:
            return BucketAlreadyOwnedByYou(BucketName=exc.bucket)
        case domain.BucketExists():
            return BucketAlreadyExists()
        case domain.BucketNotEmpty():
            return BucketNotEmpty(BucketName=exc.bucket)
        case domain.InvalidBucketName():
            return InvalidBucketName(BucketName=exc.bucket)
        case domain.KeyTooLong():
            return KeyTooLongError()
        case domain.InvalidKey():
            return InvalidArgument(str(exc))
        case domain.DigestMismatch() if exc.which == "md5":
            return BadDigest()
        case domain.DigestMismatch() if exc.which == "content-sha256":
            return XAmzContentSHA256Mismatch()
        case domain.DigestMismatch():
            return BadDigest(f"The {exc.which.upper()} you specified did not match the calculated checksum.")
        case domain.SizeMismatch():
            return IncompleteBody()
        case domain.TooLarge():
            return EntityTooLarge()
        case domain.PartTooSmall():
            return EntityTooSmall()
        case domain.InvalidPart():
            return InvalidPart()
        case domain.InvalidPartOrder():
            return InvalidPartOrder()
        case domain.PreconditionFailed():
            return PreconditionFailed(Condition=exc.condition)
        case domain.NotModified():
            err = NotModified()
            err.headers = {"ETag": exc.etag}
            return err
        case domain.RangeNotSatisfiable():
            err = InvalidRange(ActualObjectSize=str(exc.size))
            err.headers = {"Content-Range": f"bytes */{exc.size}"}
            return err
        case domain.StorageFull():
            return InsufficientStorage()
        case domain.IngestedReadOnly():
            return AccessDenied(str(exc))
        case domain.StorageUnavailable():
            return SlowDown("The storage backend is unavailable; retry later.")
        case domain.ObjectCorrupt():
            return InternalError("The stored object failed verification and is not served.")
    return InternalError()
