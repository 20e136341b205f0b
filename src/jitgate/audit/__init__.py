"""Administrative audit log: who changed which connection, token, user or delegation."""

from jitgate.audit.log import AuditEvent, AuditLog

__all__ = ["AuditEvent", "AuditLog"]
