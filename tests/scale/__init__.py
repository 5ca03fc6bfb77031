"""Scale-out tests: one node and several separate worker processes over Redis and PostgreSQL."""

__all__: list[str] = []
