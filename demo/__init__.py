"""``eusdx demo``: the whole job end to end on embedded defaults (phantom -> train -> serve -> PACS)."""

__all__: list[str] = []
