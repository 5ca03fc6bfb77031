"""IHE ATNA: the audit log as DICOM audit messages (PS3.15 A.5) sent over syslog.

``message`` builds the XML, ``events`` maps audit rows to PS3.15 A.5.3 events, ``validate`` checks
them against the PS3.15 A.5.1 schema, ``syslog`` carries them (RFC 5424 over TLS RFC 5425 or UDP
RFC 5426), ``sender`` spools and delivers them with a durable cursor.
"""

from __future__ import annotations
