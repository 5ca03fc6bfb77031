"""Coded values of DICOM audit messages (PS3.15 A.5.3 event definitions; PS3.16 CIDs 400-405).

DCM codes are from DICOM PS3.16 Annex D (the DICOM Controlled Terminology); RFC-3881 codes are the
enumerations of RFC 3881 section 5 that PS3.15 A.5 keeps. ``99EUSDX`` is our private coding scheme
for the one event the standard has no code for (an audit log that fails its integrity check).
"""

from __future__ import annotations

from audit.atna.message import Code

__all__ = [
    "APPLICATION_ACTIVITY",
    "INSTANCES_ACCESSED",
    "INSTANCES_TRANSFERRED",
    "QUERY",
    "SECURITY_ALERT",
    "USER_AUTHENTICATION",
    "APPLICATION_START",
    "APPLICATION_STOP",
    "LOGIN",
    "LOGOUT",
    "NODE_AUTHENTICATION",
    "AUDIT_CHAIN_BROKEN",
    "ROLE_APPLICATION",
    "ROLE_LAUNCHER",
    "ROLE_DESTINATION",
    "ROLE_SOURCE",
    "ID_STUDY_UID",
    "ID_NODE",
    "ID_PATIENT_NUMBER",
    "ID_SEARCH_CRITERIA",
    "ID_URI",
]

# EventID (PS3.15 A.5.3, CID 400 "Audit Event ID")
APPLICATION_ACTIVITY = Code("110100", "DCM", "Application Activity")
INSTANCES_ACCESSED = Code("110103", "DCM", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
QUERY = Code("110112", "DCM", "Query")
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
USER_AUTHENTICATION = Code("110114", "DCM", "User Authentication")

# EventTypeCode (CID 401 application activity, CID 403 security alert, CID 402 user authentication)
APPLICATION_START = Code("110120", "DCM", "Application Start")
APPLICATION_STOP = Code("110121", "DCM", "Application Stop")
LOGIN = Code("110122", "DCM", "Login")
LOGOUT = Code("110123", "DCM", "Logout")
NODE_AUTHENTICATION = Code("110126", "DCM", "Node Authentication")
AUDIT_CHAIN_BROKEN = Code("audit-chain-broken", "99EUSDX", "Audit log integrity check failed")

# RoleIDCode (CID 402 "Audit Active Participant Role ID Code")
ROLE_APPLICATION = Code("110150", "DCM", "Application")
ROLE_LAUNCHER = Code("110151", "DCM", "Application Launcher")
ROLE_DESTINATION = Code("110152", "DCM", "Destination Role ID")
ROLE_SOURCE = Code("110153", "DCM", "Source Role ID")

# ParticipantObjectIDTypeCode (CID 404 "Audit Participant Object ID Type Code")
ID_STUDY_UID = Code("110180", "DCM", "Study Instance UID")
ID_NODE = Code("110182", "DCM", "Node ID")
ID_PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
ID_SEARCH_CRITERIA = Code("10", "RFC-3881", "Search Criteria")
ID_URI = Code("12", "RFC-3881", "URI")
