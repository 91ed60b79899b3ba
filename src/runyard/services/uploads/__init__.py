"""Uploads: files sent ahead of (or with) the runs that use them, stored once by content,
kept while a run uses them, expired when nobody does (issue 18)."""

from runyard.services.uploads.checks import Fetch, Seen, check_files, file_values, named_uploads
from runyard.services.uploads.expiry import UploadExpiry
from runyard.services.uploads.incoming import Incoming, UploadTooLargeError, storage_error
from runyard.services.uploads.names import UPLOAD_ID, safe_name
from runyard.services.uploads.record import Upload
from runyard.services.uploads.store import UploadQuotaError, Uploads

__all__ = [
    "UPLOAD_ID", "Fetch", "Incoming", "Seen", "Upload", "UploadExpiry", "UploadQuotaError",
    "UploadTooLargeError", "Uploads", "check_files", "file_values", "named_uploads",
    "safe_name", "storage_error",
]  # fmt: skip
